"""Where a trained network's integer file first departs from its Keras model, layer by layer.

A network is trained with ``benchmarks/export_zoo.py --train``'s recipe (Fashion-MNIST at
32x32x3, float training, one fine-tuning epoch with ``TemperatureScheduler()``). For each
probed layer ``L`` (up to ``--probes`` layers with a low-bit activation staircase, evenly
spread; then the whole model) the model cut at ``L`` (``keras.Model(qat.inputs, L.output)``)
is exported with the default options and run as a phone runs it (XNNPACK) on the test images.
A value *flips* where the file and the Keras hard model differ by more than a quarter of the
smallest step between the Keras values. Flips compound (one flipped code changes the next
layer's input), so the images in which flips appear for the first time point at the layers
where the file departs; the others only carry earlier flips on.

``--no-margins`` trains and measures with ``snap_biases`` leaving out the rounding margins of
:mod:`tf_qnets.core.rounding_margin` (int8 outputs behind a BN only snapped onto their
lattice): the state before that step. The benchmark patches its own process only.

    python benchmarks/flip_origins.py --model ResNet50 --bits W4A4
    python benchmarks/flip_origins.py --model ResNet50 --bits W4A4 --no-margins
"""

import argparse
import gc
import os
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tf_qnets  # noqa: E402
import tf_qnets.core.bias_lattice as bias_lattice  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402
from tf_qnets.keras2.quantizer import QNetsQuantizer  # noqa: E402
from tf_qnets.keras2.wrapper import QNetsWrapper  # noqa: E402
from tf_qnets.runtime import load_interpreter, predict  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_zoo  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ResNet50", choices=export_zoo.MODELS)
    parser.add_argument("--bits", default="W4A4")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--train-images", type=int, default=6000)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--probe-images", type=int, default=500,
                        help="test images run through each cut model")
    parser.add_argument("--float-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--probes", type=int, default=8, help="activation layers probed")
    parser.add_argument("--no-margins", action="store_true")
    return parser.parse_args(argv)


def without_margins():
    """Make ``snap_biases`` (in this process) treat every layer as a plain bias snap."""
    plain = bias_lattice.bias_lattices

    def lattices(network, finer_inputs=True):
        rows = plain(network, finer_inputs)
        for row in rows:
            row.output_step = None
        return rows

    bias_lattice.bias_lattices = lattices


def probed_layers(qat, count):
    """Up to ``count`` layers with a low-bit activation staircase, evenly spread, in model
    order."""
    names = [layer.name for layer in qat.layers if isinstance(layer, QNetsWrapper)
             and any(role != "weights" and isinstance(quantizer, QNetsQuantizer)
                     for role, _, quantizer, _ in layer.quantizer_states())]
    if len(names) <= count:
        return names
    return [names[int(round(i))] for i in np.linspace(0, len(names) - 1, count)]


def flips(qat, layer_name, images, calibration, folder):
    """``(flipped values, values, images with a flip)`` of the model cut at ``layer_name``."""
    layer = qat.get_layer(layer_name)
    cut = keras.Model(qat.inputs, layer.get_output_at(-1))
    path = os.path.join(folder, f"{layer_name}.tflite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf_qnets.export_tflite(cut, path, calibration)
    # a direct call, not predict: predict traces a function per cut model (memory grows)
    expected = np.concatenate([np.asarray(cut(images[i:i + 250], training=False), np.float64)
                               for i in range(0, len(images), 250)])
    got = np.asarray(predict(load_interpreter(path), images, batch_size=250), np.float64)
    levels = np.unique(np.round(expected.ravel()[:200000], 6))
    step = float(np.min(np.diff(levels))) if len(levels) > 1 else 1.0
    flipped = np.abs(expected - got) > step / 4
    per_image = flipped.reshape(len(images), -1).any(axis=1)
    del cut
    gc.collect()
    return int(flipped.sum()), flipped.size, set(np.flatnonzero(per_image).tolist())


def main(argv=None):
    args = parse_args(argv)
    if args.no_margins:
        without_margins()
    zoo_args = export_zoo.parse_args(
        ["--train", "--size", str(args.size), "--train-images", str(args.train_images),
         "--test-images", str(args.test_images), "--float-epochs", str(args.float_epochs),
         "--epochs", str(args.epochs)])
    start = time.perf_counter()
    (x, y), (x_test, y_test) = export_zoo.fashion_mnist_rgb(zoo_args)
    if args.model in export_zoo.PIXEL_INPUT_MODELS:      # they scale pixel values themselves
        x, x_test = (np.round((images + 1.0) * 127.5).astype("float32") for images in (x, x_test))
    model, _ = export_zoo.train_float(args.model, zoo_args, x, y)
    qat = export_zoo.fine_tune(model, args.bits, zoo_args, x, y)
    print(f"[{args.model} {args.bits}{' without margins' if args.no_margins else ''}] trained "
          f"in {time.perf_counter() - start:.0f} s", flush=True)
    images = x_test[:args.probe_images]
    seen = set()
    with tempfile.TemporaryDirectory() as folder:
        for name in probed_layers(qat, args.probes):
            count, total, hit = flips(qat, name, images, x[:64], folder)
            new = sorted(hit - seen)
            seen |= hit
            print(f"  {name}: {count} of {total} values flipped ({count / total:.2e}), in "
                  f"{len(hit)} images, {len(new)} of them new", flush=True)
        path = os.path.join(folder, "model.tflite")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tf_qnets.export_tflite(qat, path, x[:64])
        check = tf_qnets.verify_tflite(qat, path, (x_test, y_test))
    print(f"  whole model: agreement {100 * check.agreement:.2f}% of {len(x_test)} test images "
          f"(Keras {100 * check.keras_accuracy:.2f}%, TFLite {100 * check.tflite_accuracy:.2f}%)")
    print(f"Command: python benchmarks/flip_origins.py {' '.join(sys.argv[1:])} "
          f"({(time.perf_counter() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()

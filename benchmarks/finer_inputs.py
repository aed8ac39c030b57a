"""What ``finer_inputs`` trades: Keras accuracy after the bias snap and agreement, against latency.

A linear kernel layer that reads a staircase (a MobileNetV2 projection) rounds its int32 bias
to a unit; a file exported with ``finer_inputs=True`` re-stores that input ``m`` times finer with
one requantizing MUL per such layer, ``finer_inputs=False`` leaves the MULs out for a unit ``m``
times coarser (docs/export.md; the default, ``"auto"``, gives the MUL only to layers doing at
least 128 multiply-adds per value they read). ``snap_biases(model, finer_inputs=True)`` moves
the Keras biases onto the finer unit, ``snap_biases(model, finer_inputs=False)`` onto the plain one. For
one trained model per setting this prints the Keras test accuracy with the biases as trained,
snapped on the plain lattice and snapped on the finer one, and the top-1 agreement of the
files (XNNPACK and TFLite's reference kernels) exported with and without finer inputs.

Recipe (as ``benchmarks/export_zoo.py --train``): the float ``--model`` (``--size`` 32, 10
classes) trained ``--float-epochs`` on ``--train-images`` Fashion-MNIST images, quantized at each
``--bits`` (``first_last="int8"``), fine-tuned ``--epochs`` with
``TemperatureScheduler(snap_biases=False)``, then snapped each way from the same weights.

    python benchmarks/finer_inputs.py --model MobileNetV2 --bits W4A4 W3A3
"""

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import export_zoo  # noqa: E402
import tf_qnets  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="MobileNetV2", choices=export_zoo.MODELS)
    parser.add_argument("--bits", nargs="+", default=["W4A4", "W3A3"])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--train-images", type=int, default=10000)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--float-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def agreement(qat, path, x, test, finer_inputs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf_qnets.export_tflite(qat, path, x[:64], finer_inputs=finer_inputs)
    check = tf_qnets.verify_tflite(qat, path, test, kernels="both")
    return check.agreement, check.reference.agreement


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    zoo_args = export_zoo.parse_args(
        ["--train", "--size", str(args.size), "--train-images", str(args.train_images),
         "--test-images", str(args.test_images), "--float-epochs", str(args.float_epochs)])
    (x, y), (x_test, y_test) = export_zoo.fashion_mnist_rgb(zoo_args)
    if args.model in export_zoo.PIXEL_INPUT_MODELS:      # they scale pixel values themselves
        x, x_test = (np.round((images + 1.0) * 127.5).astype("float32") for images in (x, x_test))
    test = (x_test, y_test)
    model, _ = export_zoo.train_float(args.model, zoo_args, x, y)
    print(f"[{args.model}] float {100 * model.evaluate(*test, verbose=0)[1]:.2f}%", flush=True)
    folder = tempfile.mkdtemp()
    rows = []
    for bits in args.bits:
        qat = export_zoo.fine_tune(model, bits, args, x, y, snap_biases=False)
        trained = qat.get_weights()
        row = {"bits": bits, "as_trained": qat.evaluate(*test, verbose=0)[1]}
        for lattice in ("plain", "finer"):
            qat.set_weights(trained)
            tf_qnets.snap_biases(qat, finer_inputs=lattice == "finer")
            row[lattice] = qat.evaluate(*test, verbose=0)[1]
            for finer_file in (False, True):
                path = os.path.join(folder, f"{bits}_{lattice}_{finer_file}.tflite")
                row[lattice, finer_file] = agreement(qat, path, x, test, finer_file)
        rows.append(row)
        print(f"[{args.model} {bits}] Keras as trained {100 * row['as_trained']:.2f}%, snapped "
              f"on the plain lattice {100 * row['plain']:.2f}%, on the finer one "
              f"{100 * row['finer']:.2f}%", flush=True)
        for lattice in ("plain", "finer"):
            for finer_file in (False, True):
                xnnpack, reference = row[lattice, finer_file]
                print(f"    snapped on the {lattice} lattice, file finer_inputs={finer_file}: "
                      f"agreement XNNPACK {100 * xnnpack:.2f}%, reference kernels "
                      f"{100 * reference:.2f}%", flush=True)
    print(f"Command: python benchmarks/finer_inputs.py {' '.join(args.argv)}; machine: "
          f"{export_zoo.machine()}; whole run {(time.perf_counter() - start) / 60:.1f} min")
    return rows


if __name__ == "__main__":
    main()

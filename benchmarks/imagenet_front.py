"""EfficientNet's ImageNet front through quantize_model and export_tflite: does the file agree?

``keras.applications.EfficientNetB0(weights="imagenet")`` puts ``Rescaling(1/255)``, a
``Normalization`` holding the ImageNet mean and variance (loaded from its weight file) and a
per-channel ``tf.math.multiply`` by ``1 / sqrt(std)`` in front of its stem;
``EfficientNetV2B0`` a ``Rescaling`` and a ``Normalization`` with the ImageNet statistics as
constants (with any weights). This script builds each network as those weights build it, but
with random weights (no download: the weight file ``weights="imagenet"`` asks for is replaced
by one of random weights of the same network, and the ImageNet statistics are put into the
``Normalization``), with ``include_top=False`` plus a 10-way ``Dense`` head, quantizes it
(``first_last="int8"``), exports it and measures how often the file's top-1 agrees with the
Keras model on random images (smooth: 8x8 uniform noise resized to the input size). Random
weights make top-1 agreement a harsh measure; each row's "control" is the same network built
with ``weights=None`` (EfficientNet: the identity ``Normalization``, no multiply).

    python benchmarks/imagenet_front.py                       # EfficientNetB0, 32x32, W4A4
    python benchmarks/imagenet_front.py --models EfficientNetB0 EfficientNetV2B0 --bits W4A4 W3A3
"""

import argparse
import os
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
BITS = {"W4A4": (4, 4), "W3A3": (3, 3)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["EfficientNetB0"])
    parser.add_argument("--bits", nargs="+", default=["W4A4"], choices=sorted(BITS))
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--test", type=int, default=256)
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    return parser.parse_args(argv)


def _application_module(name):
    from tf_keras.src.applications import efficientnet, efficientnet_v2
    return efficientnet_v2 if name.startswith("EfficientNetV2") else efficientnet


def build(name, size, imagenet_front):
    """The network as ``weights="imagenet"`` builds it (random weights) or as ``weights=None``."""
    keras.utils.set_random_seed(0)
    shape = (size, size, 3)
    factory = getattr(keras.applications, name)
    base = factory(include_top=False, weights=None, input_shape=shape)
    if imagenet_front and not name.startswith("EfficientNetV2"):
        folder = tempfile.mkdtemp()
        path = os.path.join(folder, "random.h5")
        base.save_weights(path)
        module = _application_module(name)
        original = module.data_utils.get_file
        module.data_utils.get_file = lambda *args, **kwargs: path
        try:
            base = factory(include_top=False, weights="imagenet", input_shape=shape)
        finally:
            module.data_utils.get_file = original
        norm = [layer for layer in base.layers if type(layer).__name__ == "Normalization"][0]
        norm.set_weights([IMAGENET_MEAN, IMAGENET_STD ** 2, np.array(0, np.int64)])
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    return keras.Model(base.input, keras.layers.Dense(10, name="head")(x))


def images(count, size, seed):
    low = np.random.default_rng(seed).uniform(0, 255, (count, 8, 8, 3)).astype(np.float32)
    return tf.image.resize(low, (size, size)).numpy()


def front_layers(model):
    kinds = [type(layer).__name__ for layer in model.layers[1:5]]
    return " -> ".join(kinds)


def run(name, bits, imagenet_front, args):
    model = build(name, args.size, imagenet_front)
    calibration = images(args.calibration, args.size, 1)
    test = images(args.test, args.size, 2)
    w_bits, a_bits = BITS[bits]
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qat = tf_qnets.quantize_model(model, w_bits=w_bits, a_bits=a_bits, first_last="int8",
                                      calibration_data=calibration, verbose=0)
    quantize_s = time.time() - start
    start = time.time()
    path = os.path.join(tempfile.mkdtemp(), "model.tflite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = tf_qnets.export_tflite(qat, path, calibration, verify_data=test)
    export_s = time.time() - start
    ops = {op: count for op, _, count in report.ops}
    return {"model": name, "bits": bits,
            "front": "ImageNet front" if imagenet_front else "control (weights=None)",
            "layers": front_layers(model), "agreement": report.verification.agreement,
            "samples": report.verification.samples,
            "max_diff": report.verification.max_abs_diff, "quantize_s": quantize_s,
            "export_s": export_s, "depthwise": ops.get("DEPTHWISE_CONV_2D", 0),
            "off_lattice": len(report.off_lattice)}


def markdown(rows, args, wall):
    lines = [
        f"`python benchmarks/imagenet_front.py --models {' '.join(args.models)} --bits "
        f"{' '.join(args.bits)} --size {args.size}` ({wall / 60:.1f} min; random weights, "
        f"{args.calibration} calibration and {args.test} test images):", "",
        "| model | W/A | built as | front layers (Keras 2) | agreement | max logit diff | "
        "layers off their bias lattice | quantize + export |",
        "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['bits']} | {row['front']} | {row['layers']} | "
            f"{100 * row['agreement']:.2f}% ({row['samples']}) | {row['max_diff']:.3g} | "
            f"{row['off_lattice']} | {row['quantize_s']:.1f} + {row['export_s']:.1f} s |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    rows = []
    for name in args.models:
        for bits in args.bits:
            for imagenet_front in (False, True):
                if imagenet_front is False and name.startswith("EfficientNetV2"):
                    continue       # its front holds the ImageNet statistics with any weights
                row = run(name, bits, imagenet_front, args)
                print(f"{row['model']} {row['bits']} {row['front']}: agreement "
                      f"{100 * row['agreement']:.2f}%, max logit diff {row['max_diff']:.3g}, "
                      f"{row['quantize_s']:.1f} + {row['export_s']:.1f} s", flush=True)
                rows.append(row)
    table = markdown(rows, args, time.time() - start)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(table + "\n")


if __name__ == "__main__":
    main()

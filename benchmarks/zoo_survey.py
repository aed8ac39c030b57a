"""keras.applications networks beyond the export zoo: does quantize -> export work, first time?

For each network (random weights, ``weights=None``, 10 classes, the smallest input it takes):
``quantize_model(w_bits=4, a_bits=4, first_last="int8")`` on 16 smooth random images, then
``export_tflite`` with 32 more as ``verify_data``. Prints, per network, what a user meets:
the times, the file's top-1 agreement with the Keras model and its largest logit difference
against the range of the Keras logits (the head without softmax; random weights make top-1
agreement a harsh measure: the 10 logits of a deep random network are often nearly equal),
the file's op counts, or the first line of the error.

    python benchmarks/zoo_survey.py
    python benchmarks/zoo_survey.py --models Xception:71 VGG16:32
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

DEFAULT_MODELS = ["VGG16:32", "ResNet101:32", "InceptionV3:75", "InceptionResNetV2:75",
                  "Xception:71", "NASNetMobile:32", "EfficientNetV2B0:32", "RegNetX002:32",
                  "ConvNeXtTiny:32"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS,
                        help="Name:size pairs of keras.applications networks")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    return parser.parse_args(argv)


def images(count, size, seed):
    low = np.random.default_rng(seed).uniform(0, 255, (count, 8, 8, 3)).astype(np.float32)
    return tf.image.resize(low, (size, size)).numpy()


def _first_line(error):
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    return text if len(text) <= 240 else text[:237] + "..."


def survey(name, size):
    row = {"model": f"{name} ({size}x{size})"}
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3),
                                              classes=10, classifier_activation=None)
    x = images(48, size, 0)
    start = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            qat = tf_qnets.quantize_model(model, w_bits=4, a_bits=4, first_last="int8",
                                          calibration_data=x[:16], verbose=0)
        except Exception as error:          # what a user meets, reported as it is
            row["result"] = f"quantize_model: {_first_line(error)}"
            return row
        row["quantize_s"] = time.time() - start
        start = time.time()
        try:
            report = tf_qnets.export_tflite(qat, os.path.join(tempfile.mkdtemp(), "m.tflite"),
                                            x[:16], verify_data=x[16:])
        except Exception as error:
            row["result"] = f"export_tflite: {_first_line(error)}"
            return row
    row["export_s"] = time.time() - start
    row["warnings"] = sum("tf_qnets" in str(w.filename) for w in caught)
    ops = sorted(report.ops, key=lambda op: -op[2])
    spread = float(np.ptp(qat.predict(x[16:], verbose=0)))
    row["result"] = (f"exported; agreement {100 * report.verification.agreement:.1f}% "
                     f"({report.verification.samples}), max logit difference "
                     f"{report.verification.max_abs_diff:.3g} of a logit range {spread:.3g}; ops: "
                     + ", ".join(f"{op} x{count}" for op, _, count in ops[:5])
                     + (", ..." if len(ops) > 5 else ""))
    return row


def markdown(rows, args, wall):
    lines = [f"`python benchmarks/zoo_survey.py --models {' '.join(args.models)}` "
             f"({wall / 60:.1f} min; random weights, W4A4, `first_last=\"int8\"`):", "",
             "| model | quantize + export | what happened |", "|---|---|---|"]
    for row in rows:
        times = (f"{row['quantize_s']:.0f} + {row['export_s']:.0f} s" if "export_s" in row
                 else f"{row['quantize_s']:.0f} s + -" if "quantize_s" in row else "-")
        lines.append(f"| {row['model']} | {times} | {row['result']} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    rows = []
    for spec in args.models:
        name, _, size = spec.partition(":")
        row = survey(name, int(size or 32))
        print(f"{row['model']}: {row['result']}", flush=True)
        rows.append(row)
        keras.backend.clear_session()
    table = markdown(rows, args, time.time() - start)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(table + "\n")


if __name__ == "__main__":
    main()

"""keras.applications networks through quantize_model and export_tflite: time, lowering, size, latency.

For each model (random weights, ``--size`` square RGB inputs, ``--calibration`` images of
random pixels scaled to [-1, 1]): ``tf_qnets.quantize_model`` at each ``--bits`` setting with
``first_last="int8"``, then ``export_tflite`` (default int8 storage); prints and writes (between
the ``export-zoo`` markers of ``--markdown``) one row per model and setting: quantize and export
wall time, how the activation staircases were lowered (aligned / per-threshold copies / partly
aligned / reading a rounded tensor: docs/export.md, "How the file stays exact"), the share of
aligned channels exact under TFLite's reference kernels too, top-1 agreement of the file with
the Keras model on ``--calibration`` other random images, file size against the float32 TFLite
file of the same Keras model, and single-thread XNNPACK latency of the file, the float32 file
and TFLite's own post-training int8 file of the float model (median of ``--runs`` invocations
on one input); then the size and latency of the same model exported with
``int4_weights="auto"``. Accuracy needs trained weights and real images, which this offline
machine has not: see benchmarks/accuracy.py for accuracy.

    python benchmarks/export_zoo.py --size 224 --models MobileNet MobileNetV2 ResNet50
"""

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets._keras import keras, tf  # noqa: E402
from tf_qnets.export import export_tflite, verify_tflite  # noqa: E402
from tf_qnets.runtime import load_interpreter  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from markdown_block import replace_block  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "ResNet50",
          "ResNet50V2", "EfficientNetB0", "DenseNet121")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["MobileNet", "MobileNetV2", "ResNet50"],
                        choices=MODELS)
    parser.add_argument("--bits", nargs="+", default=["W4A4"], help="settings like W4A4 W3A3")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calibration", type=int, default=128, help="calibration images")
    parser.add_argument("--runs", type=int, default=30, help="timed invocations per file")
    parser.add_argument("--markdown", default=None,
                        help="Markdown file to update (e.g. docs/export.md); none by default")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def build(name, size):
    kwargs = {"alpha": 0.35} if name == "MobileNetV2" and size < 96 else {}
    return getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None,
                                             classes=1000, **kwargs)


def latency_ms(path, shape, runs):
    interpreter = load_interpreter(path, num_threads=1)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], x)
    for _ in range(3):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def run(name, bits, args, folder):
    w_bits, a_bits = (int(part) for part in bits[1:].split("A"))
    model = build(name, args.size)
    images = np.random.default_rng(0).integers(0, 256, (2 * args.calibration, args.size, args.size, 3))
    images = (images / 127.5 - 1.0).astype("float32")
    images, held_out = images[:args.calibration], images[args.calibration:]
    calibration = tf.data.Dataset.from_tensor_slices(images).batch(16)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qat = tf_qnets.quantize_model(model, w_bits=w_bits, a_bits=a_bits, calibration_data=calibration,
                                      first_last="int8", verbose=0)
    quantize_s = time.perf_counter() - start
    path = os.path.join(folder, f"{name}_{bits}.tflite")
    start = time.perf_counter()
    report = export_tflite(qat, path, images[:32])
    export_s = time.perf_counter() - start
    agreement = verify_tflite(qat, path, held_out).agreement
    int4_path = os.path.join(folder, f"{name}_{bits}_int4.tflite")
    int4_report = export_tflite(qat, int4_path, images[:32], int4_weights="auto")
    float_path = os.path.join(folder, f"{name}_float.tflite")
    with open(float_path, "wb") as handle:
        handle.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    ptq_path = os.path.join(folder, f"{name}_ptq.tflite")
    with open(ptq_path, "wb") as handle:
        handle.write(post_training_int8(model, images[:32]))
    shape = [1, args.size, args.size, 3]
    row = {
        "model": name, "bits": bits, "quantize_s": quantize_s, "export_s": export_s,
        "lowering": {kind: len(names) for kind, names in report.staircases.items()},
        "reference_exact": report.reference_exact, "agreement": agreement,
        "bytes": report.size_bytes, "float_bytes": os.path.getsize(float_path),
        "ms": latency_ms(path, shape, args.runs), "float_ms": latency_ms(float_path, shape, args.runs),
        "ptq_ms": latency_ms(ptq_path, shape, args.runs),
        "int4_bytes": int4_report.size_bytes, "int4_ms": latency_ms(int4_path, shape, args.runs),
    }
    print(f"[{name} {bits}] quantize {quantize_s:.1f} s, export {export_s:.1f} s, "
          f"{row['lowering']}, reference-exact {_percent(row['reference_exact'])}, agreement "
          f"{100 * agreement:.1f}%, {row['bytes'] / 1e6:.2f} MB ({row['bytes'] / row['float_bytes']:.3f} "
          f"of float), {row['ms']:.1f} ms vs float {row['float_ms']:.1f} ms, TFLite int8 PTQ "
          f"{row['ptq_ms']:.1f} ms; INT4: {row['int4_bytes'] / 1e6:.2f} MB, {row['int4_ms']:.1f} ms",
          flush=True)
    return row


def _percent(fraction):
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def post_training_int8(model, images):
    """TFLite's own full-integer post-training quantization of the float model (the latency a
    user compares against)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def markdown(rows, args, wall):
    lines = [
        "<!-- export-zoo:begin -->",
        f"Command: `python benchmarks/export_zoo.py {' '.join(args.argv)}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}. "
        f"Random weights, {args.size}x{args.size} inputs, {args.calibration} calibration images, "
        f"`first_last=\"int8\"`; latency: one thread, XNNPACK, median of {args.runs} runs. "
        f"Whole run: {wall / 60:.1f} min.",
        "",
        "| model | W/A | quantize_model | export_tflite | staircases: aligned / copies / partly / rounded "
        "| reference-exact channels | agreement | size (of float32) | latency: file / float32 / "
        "TFLite int8 PTQ | `int4_weights=\"auto\"`: size, latency |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        low = row["lowering"]
        lines.append(
            f"| {row['model']} | {row['bits'][1:].replace('A', '/')} | {row['quantize_s']:.0f} s "
            f"| {row['export_s']:.0f} s | {low.get('aligned', 0)} / {low.get('copies', 0)} / "
            f"{low.get('partial', 0)} / {low.get('rounded', 0)} | {_percent(row['reference_exact'])} "
            f"| {100 * row['agreement']:.1f}% | {row['bytes'] / 1e6:.2f} MB "
            f"({row['bytes'] / row['float_bytes']:.2f}) | {row['ms']:.1f} / {row['float_ms']:.1f} / "
            f"{row['ptq_ms']:.1f} ms | {row['int4_bytes'] / 1e6:.2f} MB, {row['int4_ms']:.1f} ms |")
    lines.append("<!-- export-zoo:end -->")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    wall = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            for bits in args.bits:
                rows.append(run(name, bits, args, folder))
                keras.backend.clear_session()
    block = markdown(rows, args, time.perf_counter() - wall)
    print(block)
    if args.markdown:
        replace_block(args.markdown, "export-zoo", block)


if __name__ == "__main__":
    main()

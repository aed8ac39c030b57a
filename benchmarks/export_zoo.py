"""keras.applications networks through quantize_model and export_tflite: time, lowering, size, latency.

For each model (random weights, ``--size`` square RGB inputs, ``--calibration`` images of
random pixels scaled to [-1, 1]): ``tf_qnets.quantize_model`` at each ``--bits`` setting with
``first_last="int8"``, then ``export_tflite`` (default int8 storage); prints and writes (between
the ``export-zoo`` markers of ``--markdown``) one row per model and setting: quantize and export
wall time, how the activation staircases were lowered (aligned / per-threshold copies / partly
aligned / an addition's requantization / reading a rounded tensor: docs/export.md, "How the file stays exact"), the share of
aligned channels exact under TFLite's reference kernels too, file size against the float32
TFLite file of the same Keras model, and single-thread XNNPACK latency of the file, the float32
file and TFLite's own post-training int8 file of the float model (median of ``--runs``
invocations on one input); the number of MULs that re-store a staircase finer before a
linear kernel layer (finer inputs) in the default file (``finer_inputs="auto"``) and with
``finer_inputs=True``, and the latency of the files exported with ``finer_inputs=True`` and
``finer_inputs=False`` (no such MUL); then the size and latency of the same model exported with
``int4_weights="auto"``. (Top-1 agreement means nothing on random weights: a randomly
initialised deep network amplifies any rounding, and its near-equal logits swap places.)

``--train``: accuracy and agreement on real images instead. Each model (``--size`` 32, 10
classes) is trained ``--float-epochs`` on ``--train-images`` Fashion-MNIST images (padded to
32x32, grey replicated to RGB, scaled to [-1, 1]; pixel values in [0, 255] for the networks
that scale their input themselves: MobileNetV3, EfficientNet), quantized at each setting from
that float model, fine-tuned ``--epochs`` with ``TemperatureScheduler()``, evaluated, exported and
verified on ``--test-images`` test images: Keras and TFLite accuracy, top-1 agreement with
the file under XNNPACK and under TFLite's reference kernels, the agreement of those two runs of
the same file with each other (how finely agreement can be read at all), the agreement of the
file exported with ``finer_inputs=False`` (XNNPACK), how the staircases
were lowered, file size (block ``export-zoo-trained``).

    python benchmarks/export_zoo.py --size 224 --models MobileNet MobileNetV2 ResNet50
    python benchmarks/export_zoo.py --train --bits W4A4 W3A3 --models MobileNetV2 ResNet50
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
from tf_qnets.keras2.backend import keras, tf  # noqa: E402
from tf_qnets.datasets import load_fashion_mnist  # noqa: E402
from tf_qnets.export import export_tflite  # noqa: E402
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
    parser.add_argument("--train", action="store_true",
                        help="train on Fashion-MNIST and measure accuracy and agreement")
    parser.add_argument("--train-images", type=int, default=10000)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--float-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def build(name, size, classes=1000, classifier_activation="softmax"):
    kwargs = {"alpha": 0.35} if name == "MobileNetV2" and size < 96 else {}
    return getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None,
                                             classes=classes,
                                             classifier_activation=classifier_activation, **kwargs)


def latencies_ms(paths, shape, runs, block=10):
    """Median single-thread XNNPACK latency (ms) of each file in ``paths`` on one input of
    ``shape``, over ``runs`` timed invocations. The files take turns in blocks of ``block``
    consecutive invocations (one more untimed before each block), so that each runs as in a
    loop of its own while a slow spell of this shared machine slows all of them alike."""
    interpreters = []
    x = np.random.default_rng(0).uniform(-1, 1, shape)
    for path in paths:
        interpreter = load_interpreter(path, num_threads=1)
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], x.astype(detail["dtype"]))
        for _ in range(3):
            interpreter.invoke()
        interpreters.append(interpreter)
    times = [[] for _ in paths]
    while len(times[0]) < runs:
        count = min(block, runs - len(times[0]))
        for interpreter, measured in zip(interpreters, times):
            interpreter.invoke()
            for _ in range(count):
                start = time.perf_counter()
                interpreter.invoke()
                measured.append(time.perf_counter() - start)
    return [1e3 * float(np.median(measured)) for measured in times]


def run(name, bits, args, folder):
    w_bits, a_bits = (int(part) for part in bits[1:].split("A"))
    model = build(name, args.size)
    images = np.random.default_rng(0).integers(0, 256, (args.calibration, args.size, args.size, 3))
    images = (images / 127.5 - 1.0).astype("float32")
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
    plain_path = os.path.join(folder, f"{name}_{bits}_plain.tflite")
    plain_report = export_tflite(qat, plain_path, images[:32], finer_inputs=False)
    finer_path = os.path.join(folder, f"{name}_{bits}_finer.tflite")
    finer_report = export_tflite(qat, finer_path, images[:32], finer_inputs=True)
    int4_path = os.path.join(folder, f"{name}_{bits}_int4.tflite")
    int4_report = export_tflite(qat, int4_path, images[:32], int4_weights="auto")
    float_path = os.path.join(folder, f"{name}_float.tflite")
    with open(float_path, "wb") as handle:
        handle.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    ptq_path = os.path.join(folder, f"{name}_ptq.tflite")
    with open(ptq_path, "wb") as handle:
        handle.write(post_training_int8(model, images[:32]))
    shape = [1, args.size, args.size, 3]
    ms, float_ms, finer_ms, plain_ms, ptq_ms, int4_ms = latencies_ms(
        [path, float_path, finer_path, plain_path, ptq_path, int4_path], shape, args.runs)
    row = {
        "model": name, "bits": bits, "quantize_s": quantize_s, "export_s": export_s,
        "lowering": {kind: len(names) for kind, names in report.staircases.items()},
        "reference_exact": report.reference_exact,
        "bytes": report.size_bytes, "float_bytes": os.path.getsize(float_path),
        "ms": ms, "float_ms": float_ms,
        "muls": _op_count(report, "MUL") - _op_count(plain_report, "MUL"),
        "all_muls": _op_count(finer_report, "MUL") - _op_count(plain_report, "MUL"),
        "finer_ms": finer_ms, "plain_ms": plain_ms, "ptq_ms": ptq_ms,
        "int4_bytes": int4_report.size_bytes, "int4_ms": int4_ms,
    }
    print(f"[{name} {bits}] quantize {quantize_s:.1f} s, export {export_s:.1f} s, "
          f"{row['lowering']}, reference-exact {_percent(row['reference_exact'])}, "
          f"{row['bytes'] / 1e6:.2f} MB ({row['bytes'] / row['float_bytes']:.3f} "
          f"of float), {row['ms']:.1f} ms vs float {row['float_ms']:.1f} ms, TFLite int8 PTQ "
          f"{row['ptq_ms']:.1f} ms; finer-input MULs {row['muls']} (True: {row['all_muls']}, "
          f"{row['finer_ms']:.1f} ms; False: 0, {row['plain_ms']:.1f} ms); INT4: {row['int4_bytes'] / 1e6:.2f} MB, {row['int4_ms']:.1f} ms",
          flush=True)
    return row


def _op_count(report, op_name):
    return sum(count for name, _, count in report.ops if name == op_name)


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


def machine():
    """``x86_64 (AMD EPYC), 2 CPU cores, TensorFlow 2.21.0``: latency depends on the CPU model."""
    name = ""
    try:
        with open("/proc/cpuinfo") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle
                         if line.startswith("model name")), "")
    except OSError:
        pass
    cpu = f" ({name})" if name else ""
    return f"{platform.machine()}{cpu}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}"


def markdown(rows, args, wall):
    lines = [
        "<!-- export-zoo:begin -->",
        f"Command: `python benchmarks/export_zoo.py {' '.join(args.argv)}`  ",
        f"Machine: {machine()}. "
        f"Random weights, {args.size}x{args.size} inputs, {args.calibration} calibration images, "
        f"`first_last=\"int8\"`; latency: one thread, XNNPACK, median of {args.runs} runs (the files of a row in turn). "
        f"Whole run: {wall / 60:.1f} min.",
        "",
        "| model | W/A | quantize_model | export_tflite | staircases: aligned / copies / partly / "
        "sum / table / rounded "
        "| reference-exact channels | size (of float32) | latency: file / float32 / "
        "TFLite int8 PTQ | finer-input MULs: file / `finer_inputs=True` | latency: "
        "`finer_inputs=True` / `False` "
        "| `int4_weights=\"auto\"`: size, latency |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        low = row["lowering"]
        lines.append(
            f"| {row['model']} | {row['bits'][1:].replace('A', '/')} | {row['quantize_s']:.0f} s "
            f"| {row['export_s']:.0f} s | {low.get('aligned', 0)} / {low.get('copies', 0)} / "
            f"{low.get('partial', 0)} / {low.get('sum', 0)} / {low.get('table', 0)} / {low.get('rounded', 0)} | {_percent(row['reference_exact'])} "
            f"| {row['bytes'] / 1e6:.2f} MB "
            f"({row['bytes'] / row['float_bytes']:.2f}) | {row['ms']:.1f} / {row['float_ms']:.1f} / "
            f"{row['ptq_ms']:.1f} ms | {row['muls']} / {row['all_muls']} "
            f"| {row['finer_ms']:.1f} / {row['plain_ms']:.1f} ms "
            f"| {row['int4_bytes'] / 1e6:.2f} MB, {row['int4_ms']:.1f} ms |")
    lines.append("<!-- export-zoo:end -->")
    return "\n".join(lines)


def fashion_mnist_rgb(args):
    """Fashion-MNIST padded to ``--size`` (at least 28), grey replicated to RGB, in [-1, 1]."""
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()

    def prepare(x):
        pad = (args.size - 28) // 2
        x = np.pad(x, [(0, 0), (pad, args.size - 28 - pad), (pad, args.size - 28 - pad)])
        return np.repeat((x[..., None] / 127.5 - 1.0).astype("float32"), 3, axis=-1)

    return ((prepare(x_train[:args.train_images]), y_train[:args.train_images].astype("int64")),
            (prepare(x_test[:args.test_images]), y_test[:args.test_images].astype("int64")))


def train_float(name, args, x, y):
    """The float ``name`` network (10 classes, logits) trained ``--float-epochs`` on ``x, y``,
    and its training wall time."""
    keras.utils.set_random_seed(0)
    model = build(name, args.size, classes=10, classifier_activation=None)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # keras.applications use momentum 0.99-0.999: a few hundred steps would leave the
            # moving statistics near their initial values and evaluation at chance
            layer.momentum = 0.9
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=64, epochs=args.float_epochs, verbose=0)
    return model, time.perf_counter() - start


def fine_tune(model, bits, args, x, y, snap_biases=True):
    """``quantize_model`` at ``bits`` (``"W4A4"``) with ``first_last="int8"``, then ``--epochs``
    of ``fit`` with ``TemperatureScheduler(snap_biases=snap_biases)``."""
    w_bits, a_bits = (int(part) for part in bits[1:].split("A"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qat = tf_qnets.quantize_model(model, w_bits=w_bits, a_bits=a_bits,
                                      calibration_data=x[:256], first_last="int8", verbose=0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    qat.compile(keras.optimizers.Adam(1e-4), loss, metrics=["accuracy"])
    qat.fit(x, y, batch_size=64, epochs=args.epochs, verbose=0,
            callbacks=[tf_qnets.TemperatureScheduler(verbose=0, snap_biases=snap_biases)])
    return qat


# keras.applications networks whose first layers scale pixel values in [0, 255] themselves
# (Rescaling, Normalization): they are fed pixel values, the others [-1, 1].
PIXEL_INPUT_MODELS = ("MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0")


def run_trained(name, args, data, folder):
    """Rows for one model: trained float, then each ``--bits`` setting fine-tuned and exported."""
    (x, y), (x_test, y_test) = data
    if name in PIXEL_INPUT_MODELS:
        x, x_test = (np.round((images + 1.0) * 127.5).astype("float32") for images in (x, x_test))
    model, float_s = train_float(name, args, x, y)
    float_acc = model.evaluate(x_test, y_test, verbose=0)[1]
    print(f"[{name}] float {100 * float_acc:.2f}% after {float_s:.0f} s", flush=True)
    rows = []
    for bits in args.bits:
        start = time.perf_counter()
        qat = fine_tune(model, bits, args, x, y)
        train_s = time.perf_counter() - start
        path = os.path.join(folder, f"{name}_{bits}.tflite")
        report = export_tflite(qat, path, x[:64])
        check = tf_qnets.verify_tflite(qat, path, (x_test, y_test), kernels="both")
        plain_path = os.path.join(folder, f"{name}_{bits}_plain.tflite")
        export_tflite(qat, plain_path, x[:64], finer_inputs=False)
        plain = tf_qnets.verify_tflite(qat, plain_path, (x_test, y_test))
        row = {"model": name, "bits": bits, "float_acc": float_acc, "keras_acc": check.keras_accuracy,
               "tflite_acc": check.tflite_accuracy, "agreement": check.agreement,
               "agreement_reference": check.reference.agreement,
               "kernels_agreement": check.kernels_agreement,
               "plain_agreement": plain.agreement,
               "lowering": {kind: len(names) for kind, names in report.staircases.items()},
               "reference_exact": report.reference_exact, "bytes": report.size_bytes,
               "float_bytes": report.float_size_bytes, "train_s": float_s + train_s}
        print(f"[{name} {bits}] Keras {100 * row['keras_acc']:.2f}%, TFLite "
              f"{100 * row['tflite_acc']:.2f}%, agreement {100 * row['agreement']:.2f}% "
              f"(reference kernels {100 * row['agreement_reference']:.2f}%; the file's two kernel "
              f"sets agree on {100 * row['kernels_agreement']:.2f}%; finer_inputs=False "
              f"{100 * row['plain_agreement']:.2f}%), "
              f"{row['lowering']}", flush=True)
        rows.append(row)
    keras.backend.clear_session()
    return rows


def markdown_trained(rows, args, wall):
    lines = [
        "<!-- export-zoo-trained:begin -->",
        f"Command: `python benchmarks/export_zoo.py {' '.join(args.argv)}`  ",
        f"Machine: {machine()}. "
        f"Fashion-MNIST at {args.size}x{args.size}x3, 10 classes: float training {args.float_epochs} "
        f"epoch(s) on {args.train_images} images, W/A fine-tuning {args.epochs} epoch(s) "
        f"(`first_last=\"int8\"`, `TemperatureScheduler()`), {args.test_images} test images. "
        f"Whole run: {wall / 60:.1f} min.",
        "",
        "| model | W/A | float | Keras | TFLite | agreement: XNNPACK / reference kernels "
        "| the file's XNNPACK vs reference kernels | agreement, `finer_inputs=False` "
        "| staircases: aligned / copies / partly / "
        "sum / table / rounded | reference-exact channels | size (of float32) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        low = row["lowering"]
        lines.append(
            f"| {row['model']} | {row['bits'][1:].replace('A', '/')} | {100 * row['float_acc']:.2f}% "
            f"| {100 * row['keras_acc']:.2f}% | {100 * row['tflite_acc']:.2f}% "
            f"| {100 * row['agreement']:.2f}% / {100 * row['agreement_reference']:.2f}% "
            f"| {100 * row['kernels_agreement']:.2f}% | {100 * row['plain_agreement']:.2f}% "
            f"| {low.get('aligned', 0)} / {low.get('copies', 0)} / "
            f"{low.get('partial', 0)} / {low.get('sum', 0)} / {low.get('table', 0)} / {low.get('rounded', 0)} | {_percent(row['reference_exact'])} "
            f"| {row['bytes'] / 1e6:.2f} MB ({row['bytes'] / row['float_bytes']:.2f}) |")
    lines.append("<!-- export-zoo-trained:end -->")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    wall = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        data = fashion_mnist_rgb(args) if args.train else None
        for name in args.models:
            if args.train:
                rows += run_trained(name, args, data, folder)
                continue
            for bits in args.bits:
                rows.append(run(name, bits, args, folder))
                keras.backend.clear_session()
    render, marker = (markdown_trained, "export-zoo-trained") if args.train else (markdown, "export-zoo")
    block = render(rows, args, time.perf_counter() - wall)
    print(block)
    if args.markdown:
        replace_block(args.markdown, marker, block)


if __name__ == "__main__":
    main()

"""Accuracy benchmark on Fashion-MNIST: tf_qnets against tfmot's QAT, same float start, same budget.

One run trains (or reuses) one float CNN, then fine-tunes each method from the same float
weights with the same budget (epochs, optimizer, learning-rate schedule, data order),
evaluates it in Keras, converts it to TFLite, evaluates the TFLite file, and writes a Markdown table to
``docs/benchmarks.md`` (between the ``accuracy`` markers) with the exact command.

    python benchmarks/accuracy.py                        # the full run
    python benchmarks/accuracy.py --quick                # a smoke run (subset, 1 epoch)
    python benchmarks/accuracy.py --methods qnets-W3 tfmot-8bit

Methods: ``float``; ``tfmot-8bit`` (tfmot.quantization.keras.quantize_model);
``tfmot-W4A4``/``tfmot-W2A2`` (tfmot's experimental ``DefaultNBitQuantizeScheme``, the
uniform straight-through baseline); ``qnets-W1``/``W2``/``W3`` (float activations) and
``qnets-W4A4``/``W3A3``/``W2A2``/``W1A2``.

The fine-tuning learning rate decays along a cosine to 0 over the run (``--lr-schedule``);
tf_qnets models then get ``tf_qnets.recalibrate_batch_norm`` on 4096 training images
(``--no-recalibrate`` turns that off), the last step of the recipe in docs/train.md.
"""

import argparse
import math
import os
import platform
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import numpy as np  # noqa: E402

import tf_qnets  # noqa: E402  (selects Keras 2 before tfmot is imported)
import tensorflow_model_optimization as tfmot  # noqa: E402
from tf_qnets._keras import keras, tf  # noqa: E402
from tf_qnets.datasets import load_fashion_mnist  # noqa: E402
from tf_qnets.runtime import load_interpreter, predict  # noqa: E402

from fashion_mnist import temperature_base  # noqa: E402
from fashion_mnist_model import build_cnn, preprocess  # noqa: E402

METHODS = ("float", "tfmot-8bit", "tfmot-W4A4", "tfmot-W2A2", "qnets-W1", "qnets-W2",
           "qnets-W3", "qnets-W4A4", "qnets-W3A3", "qnets-W2A2", "qnets-W1A2")
_QNETS = re.compile(r"^qnets-W(\d)(?:A(\d))?$")
_TFMOT_NBIT = re.compile(r"^tfmot-W(\d)A(\d)$")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--float-epochs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs per method")
    parser.add_argument("--width", type=int, default=32, help="channel width of the CNN")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-4,
                        help="fine-tuning learning rate (the peak, with --lr-schedule cosine)")
    parser.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine",
                        help="cosine (default): decayed to 0 over the fine-tune; constant")
    parser.add_argument("--no-recalibrate", dest="recalibrate", action="store_false",
                        help="skip tf_qnets.recalibrate_batch_norm after fine-tuning")
    parser.add_argument("--temperature-base", type=temperature_base, default="auto",
                        help="T = base * (epoch + 1); 'auto' (default): max(10, 100 / epochs)")
    parser.add_argument("--first-last", default="int8", choices=("float", "int8", "low_bit"))
    parser.add_argument("--output-dir", default="outputs/benchmark_accuracy")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--markdown", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    parser.add_argument("--quick", action="store_true", help="2k/1k subset, 1 epoch: a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def load(args):
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data_dir)
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:2000], y_train[:2000], x_test[:1000], y_test[:1000]
    return (preprocess(x_train), y_train.astype("int32")), (preprocess(x_test), y_test.astype("int32"))


def train_dataset(train, args):
    x, y = train
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=args.seed, reshuffle_each_iteration=True)
            .batch(args.batch_size).prefetch(tf.data.AUTOTUNE))


def fine_tune_learning_rate(args, train):
    """The fine-tuning learning rate: a constant, or a cosine decay to 0 over every step."""
    if args.lr_schedule == "constant":
        return args.learning_rate
    steps = args.epochs * math.ceil(len(train[0]) / args.batch_size)
    return keras.optimizers.schedules.CosineDecay(args.learning_rate, steps)


def compile_model(model, learning_rate):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def float_model(args, train):
    path = os.path.join(args.output_dir, f"float_w{args.width}_e{args.float_epochs}"
                        f"{'_quick' if args.quick else ''}_s{args.seed}.keras")
    timer = EpochTimer()
    if os.path.exists(path):
        print(f"[float] reusing {path}")
        return keras.models.load_model(path), None
    keras.utils.set_random_seed(args.seed)
    model = build_cnn(width=args.width)
    compile_model(model, 1e-3)
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch: 1e-3 * 0.5 * (1 + np.cos(np.pi * epoch / max(args.float_epochs, 1))))
    model.fit(train_dataset(train, args), epochs=args.float_epochs, verbose=2,
              callbacks=[timer, schedule])
    model.save(path)
    return model, float(np.median(timer.seconds))


def tfmot_model(float_net, method):
    if method == "tfmot-8bit":
        return tfmot.quantization.keras.quantize_model(float_net)
    w_bits, a_bits = map(int, _TFMOT_NBIT.match(method).groups())
    scheme = tfmot.quantization.keras.experimental.default_n_bit.DefaultNBitQuantizeScheme(
        num_bits_weight=w_bits, num_bits_activation=a_bits)
    annotated = tfmot.quantization.keras.quantize_annotate_model(float_net)
    with tfmot.quantization.keras.quantize_scope():
        return tfmot.quantization.keras.quantize_apply(annotated, scheme)


def qnets_model(float_net, method, train, args):
    w_bits, a_bits = _QNETS.match(method).groups()
    calibration = tf.data.Dataset.from_tensor_slices(train[0][:1024]).batch(128)
    return tf_qnets.quantize_model(
        float_net, w_bits=int(w_bits), a_bits=int(a_bits) if a_bits else None,
        calibration_data=calibration, first_last=args.first_last, verbose=0)


def tflite_accuracy(path, test):
    logits = predict(load_interpreter(path), test[0])
    return float(np.mean(np.argmax(logits, -1) == test[1]))


def convert_plain(model, train, quantize):
    """TFLite conversion for float and tfmot models (tfmot's own path: Optimize.DEFAULT)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def representative():
            for batch in np.array_split(train[0][:512], 16):
                yield [batch.astype("float32")]

        converter.representative_dataset = representative
    return converter.convert()


def run_method(method, float_net, train, test, args):
    start = time.perf_counter()
    timer = EpochTimer()
    init_acc = None
    if method == "float":
        model = float_net
    else:
        if method.startswith("tfmot"):
            model = tfmot_model(float_net, method)
        else:
            model = qnets_model(float_net, method, train, args)
        compile_model(model, fine_tune_learning_rate(args, train))
        init_acc = float(model.evaluate(test[0], test[1], batch_size=256, verbose=0)[1])
        print(f"[{method}] test accuracy right after quantizing: {init_acc:.4f}")
        callbacks = [timer]
        if method.startswith("qnets"):
            callbacks.append(tf_qnets.TemperatureScheduler(base=args.temperature_base))
        keras.utils.set_random_seed(args.seed)
        model.fit(train_dataset(train, args), epochs=args.epochs, verbose=2, callbacks=callbacks)
        if method.startswith("qnets") and args.recalibrate:
            before = float(model.evaluate(test[0], test[1], batch_size=256, verbose=0)[1])
            tf_qnets.recalibrate_batch_norm(model, train[0][:4096])
            print(f"[{method}] test accuracy before recalibrate_batch_norm: {before:.4f}")
    keras_acc = float(model.evaluate(test[0], test[1], batch_size=256, verbose=0)[1])
    path = os.path.join(args.output_dir, f"{method}.tflite")
    tflite_acc, size, note = None, None, ""
    try:
        if method.startswith("qnets"):
            representative = tf.data.Dataset.from_tensor_slices(train[0][:512]).batch(32)
            tf_qnets.export.export_tflite(model, path, representative_data=representative)
        else:
            with open(path, "wb") as handle:
                handle.write(convert_plain(model, train, quantize=method != "float"))
        tflite_acc, size = tflite_accuracy(path, test), os.path.getsize(path)
    except Exception as error:  # reported in the table, not hidden
        message = str(error).replace(ROOT + os.sep, "").splitlines()[0][:120]
        note = f"TFLite: {type(error).__name__}: {message}"
    seconds = float(np.median(timer.seconds)) if getattr(timer, "seconds", None) else None
    print(f"[{method}] keras {keras_acc:.4f} tflite {tflite_acc} size {size} "
          f"s/epoch {seconds} ({time.perf_counter() - start:.0f} s) {note}")
    return {"method": method, "init": init_acc, "keras": keras_acc, "tflite": tflite_acc, "bytes": size,
            "seconds_per_epoch": seconds, "note": note}


def bits_of(method):
    if method == "float":
        return "32/32"
    if method == "tfmot-8bit":
        return "8/8"
    match = _QNETS.match(method) or _TFMOT_NBIT.match(method)
    w_bits, a_bits = match.groups()
    return f"{w_bits}/{a_bits or 32}"


def schedule_text(args):
    if args.temperature_base != "auto":
        return f"{args.temperature_base:g} * (epoch + 1)"
    base = tf_qnets.schedule.auto_base(args.epochs)
    return f"{base:g} * (epoch + 1) (base='auto', the default)"


def markdown(rows, args, float_seconds, wall):
    command = "python benchmarks/accuracy.py " + " ".join(sys.argv[1:])
    lines = [
        "<!-- accuracy:begin -->",
        "## Accuracy on Fashion-MNIST",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, "
        f"tfmot {tfmot.__version__}. Whole run: {wall / 60:.1f} min.  ",
        f"CNN width {args.width}; float model {args.float_epochs} epochs"
        + (f" ({float_seconds:.0f} s/epoch)" if float_seconds else " (cached)")
        + f"; every method fine-tuned {args.epochs} epochs from it with Adam(lr={args.learning_rate}"
        + (", cosine-decayed to 0" if args.lr_schedule == "cosine" else "")
        + f"), batch {args.batch_size}; tf_qnets first/last layers: {args.first_last}, "
        f"T = {schedule_text(args)}"
        + ("; tf_qnets models then recalibrate_batch_norm on 4096 training images." if args.recalibrate
           else "."),
        "",
        "| method | W/A bits | acc. after quantizing | Keras test acc | TFLite test acc | .tflite size "
        "| s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        tflite = f"{100 * row['tflite']:.2f}%" if row["tflite"] is not None else "n/a"
        size = f"{row['bytes'] / 1024:.1f} KiB" if row["bytes"] else "n/a"
        seconds = f"{row['seconds_per_epoch']:.1f}" if row["seconds_per_epoch"] else "-"
        init = f"{100 * row['init']:.2f}%" if row.get("init") is not None else "-"
        lines.append(f"| {row['method']} | {bits_of(row['method'])} | {init} | {100 * row['keras']:.2f}% "
                     f"| {tflite} | {size} | {seconds} |")
    notes = [f"- {row['method']}: {row['note']}" for row in rows if row["note"]]
    if notes:
        lines += ["", "Notes:"] + notes
    if len(rows) < len(args.methods):
        done = ", ".join(row["method"] for row in rows)
        lines += ["", f"Partial: {len(rows)} of {len(args.methods)} methods done ({done}); the run "
                  "was still going or was stopped."]
    checks = target_lines(rows)
    if checks:
        lines += ["", "Targets (Keras test accuracy):"] + checks
    lines.append("<!-- accuracy:end -->")
    return "\n".join(lines)


def target_lines(rows):
    """The issue's three targets, each stated with the measured figures (only those measurable)."""
    acc = {row["method"]: row["keras"] for row in rows}
    lines = []

    def verdict(met):
        return "met" if met else "not met"

    if "float" in acc and "qnets-W3" in acc:
        gap = 100 * (acc["float"] - acc["qnets-W3"])
        lines.append(f"- qnets-W3 within 0.3 points of float: {gap:+.2f} points below -> {verdict(gap <= 0.3)}")
    for bits in ("W4A4", "W2A2"):
        ours, theirs = acc.get(f"qnets-{bits}"), acc.get(f"tfmot-{bits}")
        if ours is not None and theirs is not None:
            lines.append(f"- qnets-{bits} above tfmot-{bits}: {100 * ours:.2f}% vs {100 * theirs:.2f}% "
                         f"-> {verdict(ours > theirs)}")
    if "float" in acc and "qnets-W3A3" in acc:
        gap = 100 * (acc["float"] - acc["qnets-W3A3"])
        lines.append(f"- qnets-W3A3 within 1 point of float: {gap:+.2f} points below -> {verdict(gap <= 1.0)}")
    return lines


def write_markdown(path, block):
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    pattern = re.compile(r"<!-- accuracy:begin -->.*?<!-- accuracy:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    directory = os.path.dirname(path) or "."
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    wall = time.perf_counter()
    train, test = load(args)
    float_net, float_seconds = float_model(args, train)
    compile_model(float_net, 1e-3)
    rows = []
    for method in args.methods:
        rows.append(run_method(method, float_net, train, test, args))
        block = markdown(rows, args, float_seconds, time.perf_counter() - wall)
        if not args.quick:    # after every method, so that a stopped run keeps what it measured
            write_markdown(args.markdown, block)
    print(block)
    if not args.quick:
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()

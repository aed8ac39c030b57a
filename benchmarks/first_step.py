"""How long a user waits for the first training batch of a ``keras.applications`` network.

``fit`` traces the train step (every quantizer's forward and backward in it), lets Grappler
optimise the graph and XLA compile the quantizers' kernels for every input shape, all
during the first batch; the progress bar shows nothing until it ends. For each model
(random weights, ``--size`` square RGB inputs, 10 classes; MobileNetV2 with alpha 0.35 below
96 pixels, as ``benchmarks/export_zoo.py``) this measures, each in a process of its own
(the traced kernels and XLA's programs are cached per process):

* ``float``: the float model, ``compile(Adam)``, ``fit`` of ``--batches`` batches of
  ``--batch`` random images;
* ``--bits``: ``quantize_model`` (with ``--batch`` calibration images), then the same
  ``fit`` with ``TemperatureScheduler()``, as the README's quick start does.

Prints and writes (between the ``first-step`` markers of ``--markdown``) the time of
``quantize_model``, of the first batch and of the later ones (median). Batches come from a
``tf.data.Dataset`` with autotuning off (docs/train.md, "When fit returns late").

    python benchmarks/first_step.py                              # about 10 minutes
    python benchmarks/first_step.py --models ResNet50 --size 64
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

MODELS = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "ResNet50",
          "ResNet50V2", "EfficientNetB0", "DenseNet121")
BITS = ("W2A2", "W3A3", "W4A4", "W4A8", "W8A8")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["MobileNetV2", "EfficientNetB0"],
                        choices=MODELS)
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--bits", default="W4A4", choices=BITS)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4, help="batches per fit (at least 2)")
    parser.add_argument("--markdown", default=os.path.join(ROOT, "docs", "train.md"),
                        help="file whose first-step block is replaced ('' for none)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "KIND"),
                        help=argparse.SUPPRESS)    # internal: measure one run, print JSON
    args = parser.parse_args(argv)
    if args.batches < 2:
        parser.error("--batches must be at least 2 (the first batch and a later one)")
    args.argv = list(argv if argv is not None else sys.argv[1:])
    return args


def measure(name, kind, args):
    """``{"quantize_s", "first_s", "later_s"}`` for one model, float (``kind="float"``) or
    quantized at ``kind`` (e.g. ``"W4A4"``), in this process."""
    import numpy as np

    import tf_qnets
    from export_zoo import build
    from keras3_train_speed import untuned_dataset
    from tf_qnets.keras2.backend import keras

    model = build(name, args.size, classes=10)
    rng = np.random.default_rng(0)
    count = args.batch * args.batches
    x = rng.uniform(0.0, 255.0, (count, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, 10, count).astype("int64")
    quantize_s = 0.0
    callbacks = []
    if kind != "float":
        w_bits, a_bits = (int(v) for v in kind[1:].split("A"))
        start = time.perf_counter()
        model = tf_qnets.quantize_model(model, w_bits=w_bits, a_bits=a_bits,
                                        calibration_data=x[:args.batch])
        quantize_s = time.perf_counter() - start
        callbacks.append(tf_qnets.TemperatureScheduler())

    class BatchTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    times = BatchTimes()
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    model.fit(untuned_dataset(x, y, args.batch), epochs=1, verbose=0,
              callbacks=callbacks + [times])
    return {"quantize_s": quantize_s, "first_s": times.seconds[0],
            "later_s": statistics.median(times.seconds[1:])}


def run_alone(name, kind, args):
    """:func:`measure` in a fresh Python process (nothing traced or compiled before)."""
    command = [sys.executable, os.path.abspath(__file__), *args.argv, "--one", name, kind]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"measuring {name} {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def markdown(rows, args, wall):
    from export_zoo import machine

    lines = [
        "<!-- first-step:begin -->",
        f"Command: `{' '.join(['python benchmarks/first_step.py', *args.argv])}`  ",
        f"Machine: {machine()}. Random weights, {args.size}x{args.size} inputs, batches of "
        f"{args.batch}, Adam; the quantized model with `TemperatureScheduler()`. "
        f"Whole run: {wall / 60:.1f} min.",
        "",
        f"| model | float: first batch / later | {args.bits}: quantize_model | {args.bits}: "
        "first batch / later |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['float']['first_s']:.1f} s / "
            f"{row['float']['later_s'] * 1000:.0f} ms | {row['qat']['quantize_s']:.1f} s "
            f"| {row['qat']['first_s']:.1f} s / {row['qat']['later_s'] * 1000:.0f} ms |")
    lines.append("<!-- first-step:end -->")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args)))
        return None
    from markdown_block import replace_block

    start = time.perf_counter()
    rows = []
    for name in args.models:
        row = {"model": name}
        for key, kind in (("float", "float"), ("qat", args.bits)):
            print(f"{name} {kind} ...", flush=True)
            row[key] = run_alone(name, kind, args)
            print(f"  {json.dumps(row[key])}", flush=True)
        rows.append(row)
    block = markdown(rows, args, time.perf_counter() - start)
    print(block)
    if args.markdown:
        replace_block(args.markdown, "first-step", block)
    return rows


if __name__ == "__main__":
    main()

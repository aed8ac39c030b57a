"""Does ``evaluate`` after a plain ``fit`` measure what ``fit`` trained? BatchNormalization modes.

The workflow of a Keras user, on Fashion-MNIST: a VGG-style float CNN with
BatchNormalization (default momentum 0.99), ``tf_qnets.quantize_model`` with 1024
calibration images, Adam at a constant learning rate, ``fit`` with
``TemperatureScheduler()``, then ``evaluate`` on the 10k test images, with no step in
between. For each bit width and each ``batch_norm`` mode it prints the hard test accuracy
right after quantizing, the training accuracy ``fit`` showed in its last epoch, the test
accuracy ``evaluate`` gives after ``fit``, and what an extra
``tf_qnets.recalibrate_batch_norm`` on 4096 training images would give instead (measured on
the same weights, then undone)::

    python benchmarks/fit_evaluate.py                                   # W4A4 and W2A2, both modes
    python benchmarks/fit_evaluate.py --bits 3 --modes frozen frozen-soft

Modes: ``frozen`` (quantize_model's default: moving statistics in training too, hard
forward from T = 100), ``frozen-soft`` (the same with the soft forward at every
temperature, ``hard_forward_from=None``) and ``batch`` (``batch_norm="batch"``: Keras's
batch statistics in training, soft forward up to T = 100, hard from there). The table is
written to docs/train.md between the ``fit-evaluate`` markers, with the command.
"""

import argparse
import os
import platform
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import tf_qnets  # noqa: E402
from tf_qnets.keras2.backend import keras, tf  # noqa: E402
from tf_qnets.datasets import load_fashion_mnist  # noqa: E402
from tf_qnets.keras2.quantizer import QNetsQuantizer  # noqa: E402
from tf_qnets.keras2.wrapper import quantizer_states  # noqa: E402

from markdown_block import replace_block  # noqa: E402

MODES = ("frozen", "frozen-soft", "batch")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 2],
                        help="W and A bit widths, one run each (default 4 2)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["frozen", "batch"])
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--float-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--recalibrate-images", type=int, default=4096)
    parser.add_argument("--output-dir", default="outputs/fit_evaluate")
    parser.add_argument("--markdown", default=os.path.join(ROOT, "docs", "train.md"))
    parser.add_argument("--no-markdown", dest="write_markdown", action="store_false")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_float_cnn(input_shape=(28, 28, 1)):
    """4 x (conv3x3 - BatchNormalization - ReLU), widths 32, 32, 64, 64; GAP; Dense 64; Dense 10."""
    inputs = keras.Input(input_shape)
    x = inputs
    for index, channels in enumerate((32, 32, 64, 64)):
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(64, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="vgg_bn")


def compile_model(model, learning_rate):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])


def accuracy(model, x, y):
    return float(model.evaluate(x, y, batch_size=256, verbose=0)[1])


def float_model(args, train):
    path = os.path.join(args.output_dir, f"float_{args.train_images}_e{args.float_epochs}_s{args.seed}.keras")
    if os.path.exists(path):
        print(f"[float] reusing {path}")
        return keras.models.load_model(path)
    keras.utils.set_random_seed(args.seed)
    model = build_float_cnn()
    compile_model(model, 1e-3)
    model.fit(train[0], train[1], epochs=args.float_epochs, batch_size=args.batch_size, verbose=2)
    model.save(path)
    return model


def quantize(float_net, bits, mode, train):
    qat = tf_qnets.quantize_model(
        float_net, w_bits=bits, a_bits=bits, calibration_data=train[0][:1024], verbose=0,
        batch_norm="batch" if mode == "batch" else "frozen")
    if mode == "frozen-soft":
        for _, _, _, quantizer, _ in quantizer_states(qat):
            if isinstance(quantizer, QNetsQuantizer):
                quantizer.hard_forward_from = None
    return qat


def run(float_net, bits, mode, train, test, args):
    start = time.perf_counter()
    qat = quantize(float_net, bits, mode, train)
    compile_model(qat, args.learning_rate)
    initial = accuracy(qat, *test)
    keras.utils.set_random_seed(args.seed)
    history = qat.fit(train[0], train[1], epochs=args.epochs, batch_size=args.batch_size, verbose=2,
                      callbacks=[tf_qnets.TemperatureScheduler()])
    evaluated = accuracy(qat, *test)
    saved = qat.get_weights()
    with warnings.catch_warnings():   # the warning about frozen statistics is expected here
        warnings.simplefilter("ignore", UserWarning)
        tf_qnets.recalibrate_batch_norm(qat, train[0][:args.recalibrate_images])
    recalibrated = accuracy(qat, *test)
    qat.set_weights(saved)
    row = {"bits": bits, "mode": mode, "initial": initial,
           "train": float(history.history["accuracy"][-1]), "evaluate": evaluated,
           "recalibrated": recalibrated, "seconds": time.perf_counter() - start}
    print(f"[W{bits}A{bits} {mode}] after quantize {initial:.4f}, fit's last-epoch accuracy "
          f"{row['train']:.4f}, evaluate {evaluated:.4f}, with an extra recalibrate_batch_norm "
          f"{recalibrated:.4f} ({row['seconds']:.0f} s)")
    return row


def markdown(rows, args, float_acc, wall):
    command = "python benchmarks/fit_evaluate.py " + " ".join(sys.argv[1:])
    lines = [
        "<!-- fit-evaluate:begin -->",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}. "
        f"Whole run: {wall / 60:.1f} min.  ",
        f"Float CNN (4 conv-BN-ReLU, GAP, Dense 64) trained {args.float_epochs} epochs on "
        f"{args.train_images} images; its own `evaluate`: {100 * float_acc:.2f}%. Fine-tune: Adam "
        f"{args.learning_rate:g} (constant), batch {args.batch_size}, {args.epochs} epochs, "
        "`TemperatureScheduler()`; test accuracy on the 10k test images.",
        "",
        "| W/A | batch_norm | after quantize_model | fit's last-epoch accuracy | `evaluate` after `fit` "
        "| with an extra `recalibrate_batch_norm` |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['bits']}/{row['bits']} | {row['mode']} | {100 * row['initial']:.2f}% "
                     f"| {100 * row['train']:.2f}% | {100 * row['evaluate']:.2f}% "
                     f"| {100 * row['recalibrated']:.2f}% |")
    lines.append("<!-- fit-evaluate:end -->")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    wall = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data_dir)
    train = ((x_train[:args.train_images] / 255.0).astype("float32")[..., None],
             y_train[:args.train_images].astype("int32"))
    test = ((x_test / 255.0).astype("float32")[..., None], y_test.astype("int32"))
    float_net = float_model(args, train)
    compile_model(float_net, 1e-3)
    float_acc = accuracy(float_net, *test)
    print(f"[float] evaluate {float_acc:.4f}")
    rows = []
    for bits in args.bits:
        for mode in args.modes:
            rows.append(run(float_net, bits, mode, train, test, args))
    block = markdown(rows, args, float_acc, time.perf_counter() - wall)
    print(block)
    if args.write_markdown:
        replace_block(args.markdown, "fit-evaluate", block)
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()

"""Keras 3 (JAX) against Keras 2 (tf_keras + tfmot): the same network, start and budget.

One float model is trained with Keras 2 (the example's ``build_cnn`` or ``build_resnet``);
its weights are copied into the same architecture built with Keras 3 under the JAX backend.
Each path then quantizes its copy with ``tf_qnets.quantize_model`` and the same options
(``first_last`` from ``--first-last``, ``"float"`` by default; ``batch_norm="frozen"``; calibration on the
same 1024 training images), fine-tunes it with the same recipe (Adam, cosine-decayed learning
rate, batch 128, ``tf_qnets.TemperatureScheduler()``, the same per-epoch data order from a
seeded permutation) and runs a plain ``evaluate`` on the test set. Each path runs in its own
process (the Keras version and the backend are fixed per process).

    python benchmarks/keras3_vs_keras2.py                           # vgg, W3 and W3A3
    python benchmarks/keras3_vs_keras2.py --subset 20000 10000 --float-epochs 4
    python benchmarks/keras3_vs_keras2.py --quick                   # a smoke run

Each fine-tuned model is then exported to an integer TFLite file (``tf_qnets.export_tflite``,
the Keras 3 one from its JAX process) and verified on the test set: agreement with the hard
Keras model, TFLite accuracy and file size per path (``--no-export`` skips it).

Writes a Markdown table to ``docs/benchmarks.md`` (between the ``keras3-vs-keras2``
markers) with the command and the machine, unless ``--markdown ''``.
"""

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import numpy as np  # noqa: E402

from fashion_mnist_model import epoch_batches  # noqa: E402

BLOCK = "keras3-vs-keras2"
CALIBRATION_IMAGES = 1024
EXPORT_REPRESENTATIVE = 512


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("vgg", "resnet"), default="vgg")
    parser.add_argument("--methods", nargs="+", default=["W3", "W3A3"],
                        help="W<bits> or W<bits>A<bits>, e.g. W3 W3A3 W2A2")
    parser.add_argument("--float-epochs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--subset", type=int, nargs=2, metavar=("TRAIN", "TEST"), default=None)
    parser.add_argument("--quick", action="store_true", help="subset 2000/1000, 1+1 epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--first-last", choices=("float", "int8", "low_bit"), default="float",
                        help="quantize_model's first_last on both paths")
    parser.add_argument("--no-export", dest="export", action="store_false",
                        help="skip the integer TFLite export of each fine-tuned model")
    parser.add_argument("--markdown", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    # internal: run one path in this process
    parser.add_argument("--role", choices=("keras2", "keras3"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--exchange", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.subset = args.subset or [2000, 1000]
        args.float_epochs, args.epochs = 1, 1
    for method in args.methods:
        bits(method)
    return args


def bits(method):
    """``"W3A3"`` -> (3, 3); ``"W3"`` -> (3, None)."""
    text = method.upper()
    if not text.startswith("W"):
        raise SystemExit(f"--methods: {method!r} is not W<bits> or W<bits>A<bits>")
    weight, _, activation = text[1:].partition("A")
    try:
        return int(weight), (int(activation) if activation else None)
    except ValueError:
        raise SystemExit(f"--methods: {method!r} is not W<bits> or W<bits>A<bits>") from None


def load_data(args):
    from fashion_mnist_model import preprocess

    from tf_qnets.datasets import load_fashion_mnist

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data_dir)
    if args.subset:
        x_train, y_train = x_train[:args.subset[0]], y_train[:args.subset[0]]
        x_test, y_test = x_test[:args.subset[1]], y_test[:args.subset[1]]
    return ((preprocess(x_train), y_train.astype("int32")),
            (preprocess(x_test), y_test.astype("int32")))


def build(args, keras):
    from fashion_mnist_model import build_cnn, build_resnet

    keras.utils.set_random_seed(args.seed)
    return (build_cnn(keras_module=keras) if args.arch == "vgg"
            else build_resnet(keras_module=keras))


def compile_model(keras, model, learning_rate):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=True)


def run_path(args):
    """One Keras's rows (and, on Keras 2, the float model), written to the exchange folder."""
    import tf_qnets

    if args.role == "keras2":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tf_keras as keras
    else:
        import keras
    train, test = load_data(args)
    model = build(args, keras)
    weights_path = os.path.join(args.exchange, "float_weights.npz")
    result = {"role": args.role, "keras": keras.__version__, "rows": {}}
    if args.role == "keras2":
        compile_model(keras, model, 1e-3)
        start = time.time()
        model.fit(epoch_batches(keras, *train, args.batch_size, args.seed + 1000),
                  epochs=args.float_epochs, verbose=2)
        result["float_seconds"] = time.time() - start
        np.savez(weights_path, *model.get_weights())
    else:
        result["backend"] = keras.backend.backend()
        with np.load(weights_path) as saved:
            model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
        compile_model(keras, model, 1e-3)
    result["float"] = float(model.evaluate(*test, batch_size=512, verbose=0)[1])
    steps = args.epochs * math.ceil(len(train[0]) / args.batch_size)
    for method in args.methods:
        w_bits, a_bits = bits(method)
        qat = tf_qnets.quantize_model(model, w_bits, a_bits, first_last=args.first_last,
                                      calibration_data=train[0][:CALIBRATION_IMAGES], verbose=0)
        compile_model(keras, qat, keras.optimizers.schedules.CosineDecay(args.learning_rate, steps))
        initial = float(qat.evaluate(*test, batch_size=512, verbose=0)[1])
        start = time.time()
        qat.fit(epoch_batches(keras, *train, args.batch_size, args.seed), epochs=args.epochs,
                verbose=2, callbacks=[tf_qnets.TemperatureScheduler()])
        seconds = (time.time() - start) / args.epochs
        final = float(qat.evaluate(*test, batch_size=512, verbose=0)[1])
        result["rows"][method] = {"initial": initial, "final": final, "seconds_per_epoch": seconds}
        print(f"[{args.role}] {method}: {initial:.4f} after quantizing, {final:.4f} after fit "
              f"({seconds:.1f} s/epoch)", flush=True)
        if args.export:
            path = os.path.join(args.exchange, f"{args.role}_{method}.tflite")
            report = tf_qnets.export_tflite(qat, path, train[0][:EXPORT_REPRESENTATIVE],
                                            verify_data=test)
            verification = report.verification
            result["rows"][method].update(
                agreement=verification.agreement, tflite=verification.tflite_accuracy,
                keras_hard=verification.keras_accuracy, bytes=report.size_bytes)
            print(f"[{args.role}] {method} TFLite: {verification}; {report.size_bytes} bytes",
                  flush=True)
    with open(os.path.join(args.exchange, f"{args.role}.json"), "w") as file:
        json.dump(result, file)


def child(role, argv, exchange):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("TF_USE_LEGACY_KERAS", None)
    if role == "keras3":
        env["KERAS_BACKEND"] = "jax"
    command = [sys.executable, os.path.abspath(__file__), *argv, "--role", role,
               "--exchange", exchange]
    subprocess.run(command, env=env, check=True)
    with open(os.path.join(exchange, f"{role}.json")) as file:
        return json.load(file)


def markdown(args, command, keras2, keras3, wall):
    lines = [
        f"<!-- {BLOCK}:begin -->",
        "## Keras 3 (JAX) against Keras 2 on Fashion-MNIST",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; Keras 2 path: tf_keras "
        f"{keras2['keras']}; Keras 3 path: keras {keras3['keras']} on {keras3['backend']}. "
        f"Whole run: {wall / 60:.1f} min.  ",
        f"Architecture: {args.arch}; data: Fashion-MNIST"
        + (f", first {args.subset[0]} training and {args.subset[1]} test images" if args.subset
           else "") + f"; float model {args.float_epochs} epochs with Keras 2, its weights "
        f"copied into the Keras 3 model (float test accuracy {keras2['float']:.2%} on Keras 2, "
        f"{keras3['float']:.2%} on Keras 3). Each method: "
        f"quantize_model(first_last='{args.first_last}'), "
        f"{args.epochs} epochs of Adam({args.learning_rate:g}, cosine to 0), batch "
        f"{args.batch_size}, TemperatureScheduler(), the same data order; plain evaluate.",
        "",
        "| method | Keras 2: after quantizing | Keras 2: after fit | Keras 3 (JAX): after "
        "quantizing | Keras 3 (JAX): after fit | Keras 3 - Keras 2 | s/epoch K2 / K3 |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in args.methods:
        a, b = keras2["rows"][method], keras3["rows"][method]
        lines.append(
            f"| {method} | {a['initial']:.2%} | {a['final']:.2%} | {b['initial']:.2%} | "
            f"{b['final']:.2%} | {100 * (b['final'] - a['final']):+.2f} pt | "
            f"{a['seconds_per_epoch']:.1f} / {b['seconds_per_epoch']:.1f} |")
    if args.export:
        lines += [
            "",
            "Integer TFLite export of each fine-tuned model (`tf_qnets.export_tflite`, 512 training "
            "images as representative data, verified on the test images in the standalone "
            "runtime): the Keras 3 model is exported in its JAX process through the same "
            "lowering as the Keras 2 model.",
            "",
            "| method | agreement K2 / K3 | TFLite - Keras (hard) K2 / K3 | TFLite accuracy K2 / K3 "
            "| file bytes K2 / K3 |",
            "|---|---|---|---|---|",
        ]
        for method in args.methods:
            a, b = keras2["rows"][method], keras3["rows"][method]
            lines.append(
                f"| {method} | {a['agreement']:.2%} / {b['agreement']:.2%} | "
                f"{100 * (a['tflite'] - a['keras_hard']):+.2f} / "
                f"{100 * (b['tflite'] - b['keras_hard']):+.2f} pt | {a['tflite']:.2%} / "
                f"{b['tflite']:.2%} | {a['bytes']} / {b['bytes']} |")
    lines.append("")
    lines.append("s/epoch: the fine-tune's wall time over its epochs, XLA compilation and the "
                 "first epoch's tracing included; not a step-time measurement (see the "
                 "training-speed table).")
    lines.append(f"<!-- {BLOCK}:end -->")
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.role is not None:
        run_path(args)
        return
    start = time.time()
    with tempfile.TemporaryDirectory() as exchange:
        keras2 = child("keras2", argv, exchange)
        keras3 = child("keras3", argv, exchange)
    command = "python benchmarks/keras3_vs_keras2.py" + "".join(f" {a}" for a in argv)
    block = markdown(args, command, keras2, keras3, time.time() - start)
    print(block)
    if args.markdown:
        from markdown_block import replace_block

        replace_block(args.markdown, BLOCK, block)
        print(f"written to {args.markdown}")


if __name__ == "__main__":
    main()

"""Fashion-MNIST end to end: float model -> Quantization Network -> int8 TFLite on the standalone runtime.

Run (does its own set-up on a fresh machine)::

    bash scripts/example.sh --quick              # about two minutes on 2 cores
    bash scripts/example.sh --bits W3A3 W2A2     # the full run
    bash scripts/example.sh --quick --keras 3 --backend jax   # the same on Keras 3 (JAX)

Steps: load Fashion-MNIST (tensorflow-datasets, Debian's dataset-fashion-mnist or
``--data-dir``), train a float CNN (cached in ``--output-dir`` so a rerun reuses it),
``tf_qnets.quantize_model`` it for each ``--bits`` setting, fine-tune with the
temperature schedule (Adam, learning rate decayed along a cosine to 0; from T = 100 the
forward is the hard staircase, and BatchNormalization keeps the statistics quantize_model
measured), evaluate the hard model with nothing in between, export an integer TFLite file, run it
in the standalone LiteRT runtime (a process without TensorFlow), print a table and
draw pictures: the learned staircases over their weight / activation histograms, and
accuracy against bit width.
"""

import argparse
import json
import math
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.datasets import load_fashion_mnist  # noqa: E402

from fashion_mnist_model import build_cnn, preprocess  # noqa: E402

VERBOSE = 1 if sys.stdout.isatty() else 2   # progress bars on a terminal, a line per epoch in logs
_BITS = re.compile(r"^W(\d)(?:A(\d))?$")


def temperature_base(text):
    """argparse type of ``--temperature-base``: ``auto`` or a positive number."""
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number, got {text!r}")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number, got {text!r}")
    return value


def parse_bits(text):
    """'W3A3' -> (3, 3); 'W3' -> (3, None)."""
    match = _BITS.match(text.upper())
    if not match:
        raise argparse.ArgumentTypeError(
            f"bad --bits value {text!r}: use W<weight bits>[A<activation bits>], e.g. W3A3 or W2")
    w_bits = int(match.group(1))
    a_bits = int(match.group(2)) if match.group(2) else None
    if not 1 <= w_bits <= 8 or (a_bits is not None and not 1 <= a_bits <= 8):
        raise argparse.ArgumentTypeError(f"bit widths in {text!r} must be from 1 to 8")
    return w_bits, a_bits


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", nargs="+", type=parse_bits, default=None,
                        help="settings to quantize, e.g. W3A3 W2A2 W3 (default: W3A3)")
    parser.add_argument("--float-epochs", type=int, default=None, help="float training epochs")
    parser.add_argument("--qat-epochs", type=int, default=None, help="fine-tuning epochs per setting")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--temperature-base", type=temperature_base, default="auto",
                        help="T = base * (epoch + 1); 'auto' (default): max(10, 100 / epochs)")
    parser.add_argument("--thresholds", choices=("auto", "kmeans", "uniform"), default="auto")
    parser.add_argument("--first-last", choices=("float", "int8", "low_bit"), default="int8",
                        help="int8 (default) simulates the first/last layers as the device runs them")
    parser.add_argument("--output-dir", default="outputs/fashion_mnist")
    parser.add_argument("--data-dir", default=None, help="folder with the four Fashion-MNIST IDX files")
    parser.add_argument("--quick", action="store_true",
                        help="small subset and one epoch each: about two minutes on 2 cores")
    parser.add_argument("--no-plots", action="store_true", help="skip the pictures")
    parser.add_argument("--train-samples", type=int, default=None,
                        help="use only the first N training images (default: all; 10000 with --quick)")
    parser.add_argument("--test-samples", type=int, default=None,
                        help="use only the first N test images (default: all; 2000 with --quick)")
    parser.add_argument("--jit-compile", action="store_true",
                        help="compile the whole train step with XLA (on CPU the quantizers' own "
                             "XLA kernels without it are faster)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keras", type=int, choices=(2, 3), default=2,
                        help="2: tf_keras and tfmot (default); 3: Keras 3 on --backend")
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default=None,
                        help="the Keras 3 backend (with --keras 3; default jax)")
    parser.add_argument("--strategy", choices=("one", "mirrored", "multiworker"), default="one",
                        help="one device, every local GPU (MirroredStrategy), or the TF_CONFIG "
                             "cluster (MultiWorkerMirroredStrategy); see docs/distribute.md")
    args = parser.parse_args(argv)
    if args.backend is not None and args.keras != 3:
        parser.error("--backend chooses the Keras 3 backend; add --keras 3")
    if args.keras == 3 and args.backend is None:
        args.backend = "jax"
    args.bits = args.bits or [(3, 3)]
    if args.float_epochs is None:
        args.float_epochs = 1 if args.quick else 8
    if args.qat_epochs is None:
        args.qat_epochs = 1 if args.quick else 4
    return args


def load_data(args):
    try:
        (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data_dir)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    train_samples = args.train_samples or (10000 if args.quick else None)
    test_samples = args.test_samples or (2000 if args.quick else None)
    x_train, y_train = x_train[:train_samples], y_train[:train_samples]
    x_test, y_test = x_test[:test_samples], y_test[:test_samples]
    return (preprocess(x_train), y_train.astype("int32")), (preprocess(x_test), y_test.astype("int32"))


def _keras2():
    """TensorFlow and tf_keras, imported when the Keras 2 run needs them (a Keras 3 run on JAX
    imports TensorFlow only to export)."""
    import tensorflow as tf
    import tf_keras as keras

    return tf, keras


def datasets(train, batch_size, seed):
    tf, _ = _keras2()
    x, y = train
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
    options = tf.data.Options()   # each worker reads its share of every global batch
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # In-memory arrays need no autotuning, and TensorFlow 2.21 can hold the end of a fit with
    # an autotuned iterator for seconds (docs/train.md, "When `fit` returns late").
    options.autotune.enabled = False
    return ds.batch(batch_size).prefetch(2).with_options(options)


def compile_model(model, learning_rate, jit_compile=False):
    _, keras = _keras2()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


def float_model(args, train, test, strategy=None):
    """Train the float CNN, or reuse the one cached for the same settings."""
    from tf_qnets.tf.distribute import is_chief

    tf, keras = _keras2()
    path = os.path.join(args.output_dir, "float_model.keras")
    meta_path = path + ".json"
    width = 16 if args.quick else 32
    meta = {"epochs": args.float_epochs, "width": width, "seed": args.seed,
            "train_samples": len(train[0])}
    if os.path.exists(path) and os.path.exists(meta_path):
        with open(meta_path) as handle:
            if json.load(handle) == meta:
                print(f"[float] reusing {path}")
                model = keras.models.load_model(path)
                return model
    print(f"[float] training {args.float_epochs} epoch(s)")
    keras.utils.set_random_seed(args.seed)
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = build_cnn(width=width)
        compile_model(model, 1e-3, jit_compile=False)
    model.fit(datasets(train, args.batch_size, args.seed), epochs=args.float_epochs, verbose=VERBOSE)
    if is_chief(strategy):
        model.save(path)
        with open(meta_path, "w") as handle:
            json.dump(meta, handle)
    return model


def quantize_and_train(float_net, args, train, w_bits, a_bits, strategy=None):
    """quantize_model, then fine-tune (cosine-decayed Adam, temperature schedule): the model
    fit leaves is the one to evaluate and export (docs/train.md, "Recipe")."""
    from tf_qnets.tf.distribute import jit_compile_supported

    tf, keras = _keras2()
    calibration = tf.data.Dataset.from_tensor_slices(train[0][:1024]).batch(128)
    strategy = strategy or tf.distribute.get_strategy()
    steps = args.qat_epochs * math.ceil(len(train[0]) / args.batch_size)
    with strategy.scope():
        qat = tf_qnets.quantize_model(
            float_net, w_bits=w_bits, a_bits=a_bits, calibration_data=calibration,
            thresholds=args.thresholds, first_last=args.first_last)
        compile_model(qat, keras.optimizers.schedules.CosineDecay(2e-4, steps),
                      jit_compile=args.jit_compile and jit_compile_supported(strategy))
    qat.fit(datasets(train, args.batch_size, args.seed), epochs=args.qat_epochs, verbose=VERBOSE,
            callbacks=[tf_qnets.TemperatureScheduler(base=args.temperature_base, verbose=1)])
    return qat


def accuracy(model, test):
    return float(model.evaluate(test[0], test[1], batch_size=256, verbose=0)[1])


def export_and_check(qat, args, name, train, test):
    from tf_qnets.export import export_tflite, verify_tflite

    path = os.path.join(args.output_dir, f"{name}.tflite")
    report = export_tflite(qat, path, representative_data=train[0][:512])
    print(report)
    verification = verify_tflite(qat, path, (test[0], test[1]))
    print(verification)
    return path, report, verification


def run_in_standalone_runtime(path, test):
    """Accuracy of the .tflite file in a fresh process that never imports TensorFlow."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        np.save(os.path.join(folder, "x.npy"), test[0])
        np.save(os.path.join(folder, "y.npy"), test[1])
        # Load tf_qnets/runtime.py as a plain file: importing the tf_qnets package would
        # import TensorFlow, and a phone-like process has only the LiteRT runtime.
        import tf_qnets.runtime as runtime_module

        code = (
            "import importlib.util, sys, numpy as np\n"
            f"spec = importlib.util.spec_from_file_location('runtime', {runtime_module.__file__!r})\n"
            "runtime = importlib.util.module_from_spec(spec); spec.loader.exec_module(runtime)\n"
            f"x = np.load({os.path.join(folder, 'x.npy')!r}); y = np.load({os.path.join(folder, 'y.npy')!r})\n"
            f"logits = runtime.predict(runtime.load_interpreter({path!r}), x)\n"
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
            "print(runtime.interpreter_module().__name__)\n"
            "print(float(np.mean(np.argmax(logits, -1) == y)))\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"standalone runtime failed:\n{done.stderr[-2000:]}")
    backend, accuracy = done.stdout.strip().splitlines()[-2:]
    print(f"[runtime] {backend} (no TensorFlow in that process): accuracy {float(accuracy):.4f}")
    return float(accuracy)


def export_and_report(qat, args, name, train, test, hard_acc):
    """Export, verify, run in the standalone runtime, draw the staircases: the setting's row."""
    path, report, verification = export_and_check(qat, args, name, train, test)
    runtime_acc = run_in_standalone_runtime(path, test)
    if not args.no_plots:
        from plots import plot_staircases

        picture = os.path.join(args.output_dir, f"{name}_staircases.png")
        plot_staircases(qat, train[0][:256], picture)
        print(f"[{name}] staircases drawn in {picture}")
    return {"setting": name, "keras_hard": hard_acc, "tflite": runtime_acc,
            "agreement": verification.agreement, "bytes": os.path.getsize(path)}


def report(args, float_acc, rows):
    """The table, the accuracy picture and results.json."""
    keras_text = "Keras 2" if args.keras == 2 else f"Keras 3 ({args.backend})"
    print(f"\nFashion-MNIST, {keras_text}, first/last layers: {args.first_last}, "
          f"thresholds: {args.thresholds}")
    print(f"{'setting':<8} {'Keras acc':>9} {'TFLite acc':>10} {'agreement':>9} {'size':>9}")
    print(f"{'float':<8} {float_acc:>9.4f} {'':>10} {'':>9} {'':>9}")
    for row in rows:
        print(f"{row['setting']:<8} {row['keras_hard']:>9.4f} {row['tflite']:>10.4f} "
              f"{row['agreement']:>9.4f} {row['bytes'] / 1024:>7.1f}kB")
    if not args.no_plots:
        from plots import plot_accuracy

        picture = os.path.join(args.output_dir, "accuracy_vs_bits.png")
        plot_accuracy(float_acc, rows, picture)
        print(f"accuracy against bit width drawn in {picture}")
    with open(os.path.join(args.output_dir, "results.json"), "w") as handle:
        json.dump({"float": float_acc, "keras": keras_text, "quantized": rows}, handle, indent=2)


def _select_keras3_backend(backend):
    """Set KERAS_BACKEND for this process; a clear error if Keras 3 already runs another."""
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != backend:
        sys.exit(f"error: Keras 3 is already loaded with the {sys.modules['keras'].backend.backend()} "
                 f"backend in this process; run the example in a new process for --backend {backend}.")
    os.environ["KERAS_BACKEND"] = backend


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.time()
    if args.keras == 3:
        _select_keras3_backend(args.backend)
        import fashion_mnist_keras3

        fashion_mnist_keras3.main(args, sys.modules[__name__])
        print(f"done in {time.time() - start:.0f} s; outputs in {args.output_dir}")
        return
    from tf_qnets.tf.distribute import is_chief, strategy_from_name

    try:
        strategy = strategy_from_name(args.strategy)
    except ValueError as error:
        sys.exit(f"error: {error}")
    chief = is_chief(strategy)
    train, test = load_data(args)
    print(f"[data] train {train[0].shape}, test {test[0].shape}")
    float_net = float_model(args, train, test, strategy)
    compile_model(float_net, 1e-3, jit_compile=False)
    float_acc = accuracy(float_net, test)
    print(f"[float] test accuracy {float_acc:.4f}")

    rows = []
    for w_bits, a_bits in args.bits:
        name = f"W{w_bits}" + (f"A{a_bits}" if a_bits else "")
        print(f"\n[{name}] quantize_model + fine-tune {args.qat_epochs} epoch(s)")
        qat = quantize_and_train(float_net, args, train, w_bits, a_bits, strategy)
        hard_acc = accuracy(qat, test)
        print(f"[{name}] hard-staircase test accuracy {hard_acc:.4f}")
        if chief:
            rows.append(export_and_report(qat, args, name, train, test, hard_acc))
    if not chief:
        return
    report(args, float_acc, rows)
    print(f"done in {time.time() - start:.0f} s; outputs in {args.output_dir}")


if __name__ == "__main__":
    main()

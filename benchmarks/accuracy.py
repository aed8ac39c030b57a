"""Accuracy benchmark on Fashion-MNIST: tf_qnets against tfmot's and QKeras's QAT, same start and budget.

One run trains (or reuses) one float model per architecture (``--archs``: ``vgg``, the
example's ``build_cnn``; ``resnet``, ``build_resnet``), then fine-tunes each method from that
float model's weights with the same budget (epochs, optimizer, learning-rate schedule, batch,
data order, seed), evaluates it in Keras, converts it to TFLite, evaluates the TFLite file,
and writes a Markdown table per architecture to ``docs/benchmarks.md`` (between the
``accuracy`` markers) with the exact command.

    python benchmarks/accuracy.py                        # the full run (both architectures)
    python benchmarks/accuracy.py --quick                # a smoke run (subset, 1 fine-tuning epoch)
    python benchmarks/accuracy.py --archs resnet --methods qnets-W3A3 qkeras-W3A3

Methods: ``float``; ``tfmot-8bit`` (tfmot.quantization.keras.quantize_model);
``tfmot-W4A4``/``W3A3``/``W2A2`` (tfmot's experimental ``DefaultNBitQuantizeScheme``, the
uniform straight-through baseline); ``qkeras-W4A4``/``W3A3``/``W2A2`` (QKeras 0.9.0, see
below); ``qnets-W1``/``W2``/``W3`` (float activations) and
``qnets-W4A4``/``W3A3``/``W2A2``/``W1A2``; ``qnets-keras3-W3``/``W3A3``/``W2A2``, the same
tf_qnets recipe on Keras 3 with the JAX backend (below). W1, W2 and W1A2 are not in the
default list.

Keras 3 rows: this process is a Keras 2 one (tfmot and QKeras need ``tf_keras``) and the
Keras backend is fixed per process, so each ``qnets-keras3-*`` method runs in a child process
(``benchmarks/accuracy_keras3.py``, ``KERAS_BACKEND=jax``) that builds the same architecture
with Keras 3, loads this run's Keras 2 float weights into it and follows the Keras 2 tf_qnets
rows' recipe step for step (options, calibration images, optimizer, schedule, data pipeline
and seeds, evaluation, recalibration check, export). Its row sits in the same table.

Every method is measured with a plain ``fit`` -> ``evaluate``: no step after training. The
fine-tuning learning rate decays along a cosine to 0 over the run (``--lr-schedule``). For
tf_qnets rows the run also reports, in a separate column, what one extra
``tf_qnets.recalibrate_batch_norm`` on 4096 training images would give: measured on the same
trained model, whose weights are saved before and restored after, so the reported Keras and
TFLite figures are those of the plain model (``--skip-recalibration-check`` skips it).

QKeras rows: the float model is cloned with every ``Conv2D``/``Dense`` except the first and
the last kernel layer (those stay float, as tf_qnets's ``first_last="float"``) replaced by
``QConv2D``/``QDense`` with kernel quantizer
``quantized_bits(bits, 0, keep_negative=True, symmetric=True, alpha="auto_po2")`` (signed,
symmetric levels, e.g. {-1, 0, 1} x scale at 2 bits, with a per-output-channel power-of-two
scale: the setting QKeras itself picks for a kernel quantizer without alpha; the fixed
``alpha=1`` grid's step of 2^(1-bits) is far coarser than these kernels' weights) and biases
left float, and every ``ReLU`` layer replaced by ``QActivation(quantized_relu(bits,
integer))`` (as tf_qnets, which quantizes after every ReLU); BatchNormalization stays a plain
float layer and the float weights are copied over. ``quantized_relu``'s range is fixed by
``integer``: each QKeras method is fine-tuned twice, with ``integer=0`` (range [0, 1)) and
``integer=1`` (range [0, 2)), the same budget each, and the better one is reported (the note
names it). The layers before each ReLU end in BatchNormalization, whose outputs start with
unit variance: [0, 1) clips about 16% of a unit normal's values, at a fine step; [0, 2)
clips about 2%, at twice the step. No temperature scheduler for QKeras (or tfmot). QKeras
has no integer TFLite path, so its rows have no TFLite figures.
"""

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
# QKeras builds its layers on tf.keras, so tf.keras must be Keras 2 here, as in any QKeras
# user's process: the switch has to be set before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.core.staircase import GRADIENTS  # noqa: E402
from tf_qnets.keras2.schedule import auto_base  # noqa: E402
from tf_qnets.datasets import load_fashion_mnist  # noqa: E402
from tf_qnets.runtime import load_interpreter, predict  # noqa: E402

from fashion_mnist import temperature_base  # noqa: E402
from markdown_block import replace_block  # noqa: E402
from fashion_mnist_model import build_cnn, build_resnet, preprocess  # noqa: E402

ARCHS = ("vgg", "resnet")
METHODS = ("float", "tfmot-8bit", "tfmot-W4A4", "tfmot-W3A3", "tfmot-W2A2",
           "qkeras-W4A4", "qkeras-W3A3", "qkeras-W2A2", "qnets-W1", "qnets-W2",
           "qnets-W3", "qnets-W4A4", "qnets-W3A3", "qnets-W2A2", "qnets-W1A2",
           "qnets-keras3-W3", "qnets-keras3-W3A3", "qnets-keras3-W2A2")
DEFAULT_METHODS = ("float", "tfmot-8bit", "tfmot-W4A4", "tfmot-W3A3", "tfmot-W2A2",
                   "qkeras-W4A4", "qkeras-W3A3", "qkeras-W2A2", "qnets-W3", "qnets-W4A4",
                   "qnets-W3A3", "qnets-W2A2", "qnets-keras3-W3", "qnets-keras3-W3A3",
                   "qnets-keras3-W2A2")
_QNETS = re.compile(r"^qnets-W(\d)(?:A(\d))?$")
_TFMOT_NBIT = re.compile(r"^tfmot-W(\d)A(\d)$")
_QKERAS = re.compile(r"^qkeras-W(\d)A(\d)$")
_KERAS3 = re.compile(r"^qnets-keras3-(W\d(?:A\d)?)$")
# quantized_relu(bits, integer): integer bits of the activation range [0, 2**integer).
QKERAS_RELU_INTEGERS = (0, 1)
RECALIBRATION_IMAGES = 4096
_KERNEL_LAYERS = ("Conv1D", "Conv2D", "DepthwiseConv2D", "Dense")   # as tf_qnets counts them


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS,
                        help="architectures, each with its own float model (default: both)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    parser.add_argument("--float-epochs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=None,
                        help="fine-tuning epochs per method (default 4; 1 with --quick)")
    parser.add_argument("--width", type=int, default=32, help="channel width of the vgg CNN")
    parser.add_argument("--resnet-width", type=int, default=16,
                        help="first-stage channel width of the resnet")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-4,
                        help="fine-tuning learning rate (the peak, with --lr-schedule cosine)")
    parser.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine",
                        help="cosine (default): decayed to 0 over the fine-tune; constant")
    parser.add_argument("--skip-recalibration-check", dest="recalibration_check",
                        action="store_false",
                        help="skip the 'with extra recalibrate_batch_norm' column of tf_qnets rows")
    parser.add_argument("--temperature-base", type=temperature_base, default="auto",
                        help="T = base * (epoch + 1); 'auto' (default): max(10, 100 / epochs)")
    parser.add_argument("--first-last", default="int8", choices=("float", "int8", "low_bit"))
    parser.add_argument("--gradient", default=None, choices=GRADIENTS,
                        help="the tf_qnets weight quantizers' backward (default: quantize_model's)")
    parser.add_argument("--output-dir", default="outputs/benchmark_accuracy")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--markdown", default=None,
                        help="the Markdown file to update (default: docs/benchmarks.md; a --quick "
                             "run writes one only when this is given)")
    parser.add_argument("--quick", action="store_true",
                        help="2k/1k subset, 1 fine-tuning epoch (unless --epochs): a smoke run")
    parser.add_argument("--subset", type=int, nargs=2, metavar=("TRAIN", "TEST"), default=None,
                        help="use only the first TRAIN training and TEST test images "
                             "(--quick: 2000 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-rows", action="store_true",
                        help="keep, from the table already in --markdown, the rows of default "
                             "methods not run now (marked as reused; for re-measuring only the "
                             "methods whose code changed)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.epochs is None:
        args.epochs = 1 if args.quick else 4
    if args.markdown is None and not args.quick:
        args.markdown = os.path.join(ROOT, "docs", "benchmarks.md")
    return args


def subset_of(args):
    """``(train, test)`` image counts to keep, or None for the whole data."""
    return args.subset or ((2000, 1000) if args.quick else None)


def load(args):
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data_dir)
    subset = subset_of(args)
    if subset:
        x_train, y_train, x_test, y_test = (x_train[:subset[0]], y_train[:subset[0]],
                                            x_test[:subset[1]], y_test[:subset[1]])
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


def arch_width(args, arch):
    return args.width if arch == "vgg" else args.resnet_width


def build_float(args, arch):
    if arch == "vgg":
        return build_cnn(width=args.width)
    return build_resnet(width=args.resnet_width)


def arch_text(args, arch):
    if arch == "vgg":
        return f"vgg: build_cnn(width={args.width})"
    return f"resnet: build_resnet(width={args.resnet_width}), a ResNet-8 with two projection shortcuts"


def float_model_path(args, arch):
    return os.path.join(args.output_dir, f"float_{arch}_w{arch_width(args, arch)}_e{args.float_epochs}"
                        f"{'_quick' if args.quick else ''}{_subset_tag(args)}_s{args.seed}.keras")


def _subset_tag(args):
    return f"_n{args.subset[0]}" if args.subset else ""


def float_model(args, train, arch="vgg"):
    path = float_model_path(args, arch)
    timer = EpochTimer()
    if os.path.exists(path):
        print(f"[{arch} float] reusing {path}")
        return keras.models.load_model(path), None
    keras.utils.set_random_seed(args.seed)
    model = build_float(args, arch)
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
        calibration_data=calibration, first_last=args.first_last, gradient=args.gradient,
        verbose=0)


def qkeras_kernel_quantizer(bits):
    """QKeras's signed kernel quantizer: symmetric levels, per-channel power-of-two scale."""
    import qkeras

    return qkeras.quantized_bits(bits, 0, keep_negative=True, symmetric=True, alpha="auto_po2")


def qkeras_model(float_net, w_bits, a_bits, relu_integer):
    """A QKeras copy of ``float_net`` with the float weights.

    Every Conv2D/Dense but the first and the last kernel layer becomes a QConv2D/QDense
    (``qkeras_kernel_quantizer(w_bits)``, float bias); every ReLU layer becomes
    ``QActivation(quantized_relu(a_bits, relu_integer))``; the rest (BatchNormalization
    included) are plain copies.
    """
    import qkeras

    kernel_layers = [layer.name for layer in float_net.layers
                     if type(layer).__name__ in _KERNEL_LAYERS]
    unsupported = [layer.name for layer in float_net.layers
                   if type(layer).__name__ in ("Conv1D", "DepthwiseConv2D")]
    if unsupported:
        raise ValueError(f"qkeras_model handles Conv2D and Dense kernels only, not {unsupported}")
    float_edges = {kernel_layers[0], kernel_layers[-1]} if kernel_layers else set()

    def clone(layer):
        cls, config = type(layer).__name__, layer.get_config()
        if cls in ("Conv2D", "Dense") and layer.name not in float_edges:
            if config.get("activation") not in (None, "linear"):
                raise ValueError(f"layer {layer.name!r}: a fused activation is not supported; "
                                 "give the ReLU its own layer")
            quantized = qkeras.QConv2D if cls == "Conv2D" else qkeras.QDense
            return quantized(kernel_quantizer=qkeras_kernel_quantizer(w_bits), bias_quantizer=None,
                             **config)
        is_relu = (cls == "ReLU" and config.get("max_value") is None
                   and not config.get("negative_slope") and not config.get("threshold")) or (
            cls == "Activation" and config.get("activation") == "relu")
        if is_relu:
            return qkeras.QActivation(qkeras.quantized_relu(a_bits, relu_integer), name=layer.name)
        if cls == "ReLU":
            raise ValueError(f"layer {layer.name!r}: only a plain ReLU is supported")
        return layer.__class__.from_config(config)

    model = keras.models.clone_model(float_net, clone_function=clone)
    for layer in float_net.layers:
        model.get_layer(layer.name).set_weights(layer.get_weights())
    return model


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


def evaluate(model, test):
    return float(model.evaluate(test[0], test[1], batch_size=256, verbose=0)[1])


def fine_tune(model, method, train, test, args, label):
    """Compile, evaluate the start, fit with the common budget; returns (init acc, epoch times)."""
    compile_model(model, fine_tune_learning_rate(args, train))
    init_acc = evaluate(model, test)
    print(f"[{label}] test accuracy right after quantizing: {init_acc:.4f}")
    timer = EpochTimer()
    callbacks = [timer]
    if method.startswith("qnets"):
        callbacks.append(tf_qnets.TemperatureScheduler(base=args.temperature_base))
    keras.utils.set_random_seed(args.seed)
    model.fit(train_dataset(train, args), epochs=args.epochs, verbose=2, callbacks=callbacks)
    return init_acc, timer.seconds


def recalibration_check(model, train, test, plain_acc, label):
    """Test accuracy after an extra recalibrate_batch_norm, the model itself left as trained."""
    saved = model.get_weights()
    tf_qnets.recalibrate_batch_norm(model, train[0][:RECALIBRATION_IMAGES])
    recal_acc = evaluate(model, test)
    model.set_weights(saved)
    restored = evaluate(model, test)
    print(f"[{label}] plain {plain_acc:.4f}, with extra recalibrate_batch_norm {recal_acc:.4f} "
          f"(restored model: {restored:.4f})")
    note = "" if restored == plain_acc else (
        f"model after restoring the weights scored {100 * restored:.2f}%, not {100 * plain_acc:.2f}%")
    return recal_acc, note


def run_qkeras(method, float_net, train, test, args, label):
    """Fine-tune both activation ranges; the better one (Keras test accuracy) is the row."""
    w_bits, a_bits = map(int, _QKERAS.match(method).groups())
    results = []
    for integer in QKERAS_RELU_INTEGERS:
        model = qkeras_model(float_net, w_bits, a_bits, integer)
        init_acc, seconds = fine_tune(model, method, train, test, args, f"{label} integer={integer}")
        acc = evaluate(model, test)
        print(f"[{label}] quantized_relu({a_bits}, {integer}), range [0, {2 ** integer}): {acc:.4f}")
        results.append((acc, integer, init_acc, seconds))
        del model
    best = max(results, key=lambda result: result[0])   # a tie keeps the first (integer=0)
    others = [(acc, integer) for acc, integer, _, _ in results if integer != best[1]]
    tied = any(acc == best[0] for acc, _ in others)
    note = (f"activation range [0, {2 ** best[1]}) (quantized_relu integer={best[1]}) "
            + ("reported, tied with" if tied else "won, vs") + " "
            + "; ".join(f"[0, {2 ** integer}) {100 * acc:.2f}%" for acc, integer in others)
            + "; TFLite: QKeras has no integer TFLite path")
    return {"init": best[2], "keras": best[0], "seconds": best[3], "note": note}


def run_keras3(method, float_net, args, arch):
    """One ``qnets-keras3-*`` row, measured by ``benchmarks/accuracy_keras3.py`` in a JAX process."""
    weights = os.path.join(args.output_dir, f"{arch}_float_weights.npz")
    np.savez(weights, *float_net.get_weights())
    row_path = os.path.join(args.output_dir, f"{arch}_{method}.json")
    if os.path.exists(row_path):
        os.remove(row_path)
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "accuracy_keras3.py"),
               "--method", _KERAS3.match(method).group(1), "--arch", arch,
               "--float-weights", weights, "--row", row_path,
               "--tflite", os.path.join(args.output_dir, f"{arch}_{method}.tflite"),
               "--width", str(args.width), "--resnet-width", str(args.resnet_width),
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--learning-rate", str(args.learning_rate), "--lr-schedule", args.lr_schedule,
               "--temperature-base", str(args.temperature_base), "--first-last", args.first_last,
               "--recalibration-check", str(int(args.recalibration_check)),
               "--seed", str(args.seed)]
    if args.gradient:
        command += ["--gradient", args.gradient]
    subset = subset_of(args)
    if subset:
        command += ["--subset", str(subset[0]), str(subset[1])]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    env = dict(os.environ, KERAS_BACKEND="jax")
    env.pop("TF_USE_LEGACY_KERAS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    finished = subprocess.run(command, env=env)
    if finished.returncode != 0 or not os.path.exists(row_path):
        return {"arch": arch, "method": method, "init": None, "keras": None, "recal": None,
                "tflite": None, "bytes": None, "seconds_per_epoch": None,
                "note": f"the Keras 3 process failed (exit code {finished.returncode}); "
                        "its output is above in the log"}
    with open(row_path) as file:
        return json.load(file)


def run_method(method, float_net, train, test, args, arch="vgg"):
    start = time.perf_counter()
    label = f"{arch} {method}"
    init_acc, recal_acc, seconds, notes = None, None, None, []
    if _KERAS3.match(method):
        return run_keras3(method, float_net, args, arch)
    if method.startswith("qkeras"):
        result = run_qkeras(method, float_net, train, test, args, label)
        seconds = float(np.median(result["seconds"])) if result["seconds"] else None
        print(f"[{label}] keras {result['keras']:.4f} s/epoch {seconds} "
              f"({time.perf_counter() - start:.0f} s) {result['note']}")
        return {"arch": arch, "method": method, "init": result["init"], "keras": result["keras"],
                "recal": None, "tflite": None, "bytes": None, "seconds_per_epoch": seconds,
                "note": result["note"]}
    if method == "float":
        model = float_net
    else:
        if method.startswith("tfmot"):
            model = tfmot_model(float_net, method)
        else:
            model = qnets_model(float_net, method, train, args)
        init_acc, epoch_seconds = fine_tune(model, method, train, test, args, label)
        seconds = float(np.median(epoch_seconds)) if epoch_seconds else None
    keras_acc = evaluate(model, test)
    if method.startswith("qnets") and args.recalibration_check:
        recal_acc, note = recalibration_check(model, train, test, keras_acc, label)
        if note:
            notes.append(note)
    path = os.path.join(args.output_dir, f"{arch}_{method}.tflite")
    tflite_acc, size = None, None
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
        notes.append(f"TFLite: {type(error).__name__}: {message}")
    note = "; ".join(notes)
    print(f"[{label}] keras {keras_acc:.4f} recal {recal_acc} tflite {tflite_acc} size {size} "
          f"s/epoch {seconds} ({time.perf_counter() - start:.0f} s) {note}")
    return {"arch": arch, "method": method, "init": init_acc, "keras": keras_acc, "recal": recal_acc,
            "tflite": tflite_acc, "bytes": size, "seconds_per_epoch": seconds, "note": note}


def bits_of(method):
    if method == "float":
        return "32/32"
    if method == "tfmot-8bit":
        return "8/8"
    keras3 = _KERAS3.match(method)
    if keras3:
        return bits_of(f"qnets-{keras3.group(1)}")
    match = _QNETS.match(method) or _TFMOT_NBIT.match(method) or _QKERAS.match(method)
    w_bits, a_bits = match.groups()
    return f"{w_bits}/{a_bits or 32}"


def schedule_text(args):
    if args.temperature_base != "auto":
        return f"{args.temperature_base:g} * (epoch + 1)"
    base = auto_base(args.epochs)
    return f"{base:g} * (epoch + 1) (base='auto', the default)"


def _percent(value):
    return f"{100 * value:.2f}%" if value is not None else "-"


def markdown(rows, args, float_seconds, wall):
    """The Markdown block: common settings, then per architecture a table, notes and targets.

    ``float_seconds``: ``{arch: seconds per float epoch or None (cached)}`` (a bare number or
    None applies to every architecture). Rows without an ``arch`` key belong to the first of
    ``args.archs``.
    """
    if not isinstance(float_seconds, dict):
        float_seconds = {arch: float_seconds for arch in args.archs}
    command = "python benchmarks/accuracy.py " + " ".join(args.argv)
    qkeras_used = any(method.startswith("qkeras") for method in args.methods)
    lines = [
        "<!-- accuracy:begin -->",
        "## Accuracy on Fashion-MNIST",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, "
        f"tfmot {tfmot.__version__}" + (f", QKeras {_qkeras_version()}" if qkeras_used else "")
        + f". Whole run: {wall / 60:.1f} min.  ",
        f"Float models {args.float_epochs} epochs; every method fine-tuned {args.epochs} epochs from "
        f"its architecture's float model with Adam(lr={args.learning_rate}"
        + (", cosine-decayed to 0" if args.lr_schedule == "cosine" else "")
        + f"), batch {args.batch_size}, the same data order and seed, then a plain evaluate (no "
        f"step after fit). tf_qnets first/last layers: {args.first_last}, T = {schedule_text(args)}"
        + (f", weight gradient {args.gradient!r}" if args.gradient else "") + "."
        + (" QKeras: first/last kernel layers float, kernels quantized_bits(bits, 0, symmetric, "
           "alpha='auto_po2'), ReLUs quantized_relu(bits, integer) fine-tuned with integer=0 "
           "(range [0, 1)) and integer=1 (range [0, 2)), the better reported; no temperature."
           if qkeras_used else "")
        + (f" \"with extra recalibrate_batch_norm\": the same trained tf_qnets model after "
           f"tf_qnets.recalibrate_batch_norm on {RECALIBRATION_IMAGES} training images, measured on "
           "saved and restored weights (the other columns are the plain model's)."
           if args.recalibration_check else ""),
    ]
    for arch in args.archs:
        arch_rows = [row for row in rows if row.get("arch", args.archs[0]) == arch]
        if not arch_rows:
            continue
        seconds = float_seconds.get(arch)
        lines += [
            "",
            f"### {arch_text(args, arch)}",
            "",
            f"Float model: {args.float_epochs} epochs"
            + (f" ({seconds:.0f} s/epoch)." if seconds else " (cached)."),
            "",
            "| method | W/A bits | acc. after quantizing | Keras test acc "
            "| with extra recalibrate_batch_norm | TFLite test acc | .tflite size | s/epoch |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in arch_rows:
            tflite = _percent(row["tflite"]) if row["tflite"] is not None else "n/a"
            size = f"{row['bytes'] / 1024:.1f} KiB" if row["bytes"] else "n/a"
            epoch = f"{row['seconds_per_epoch']:.1f}" if row["seconds_per_epoch"] else "-"
            lines.append(f"| {row['method']} | {bits_of(row['method'])} | {_percent(row.get('init'))} "
                         f"| {_percent(row['keras'])} | {_percent(row.get('recal'))} | {tflite} | {size} "
                         f"| {epoch} |")
        notes = [f"- {row['method']}: {row['note']}" for row in arch_rows if row["note"]]
        if notes:
            lines += ["", "Notes:"] + notes
        checks = target_lines(arch_rows)
        if checks:
            lines += ["", f"Targets ({arch}, Keras test accuracy):"] + checks
    measured = [row for row in rows if _REUSED not in (row.get("note") or "")]
    if len(measured) < len(rows):
        lines += ["", f"Rows noted \"{_REUSED}\" were not measured by this command (it ran "
                  f"{', '.join(args.methods)}); their figures are the previous run's."]
    expected = len(args.methods) * len(args.archs)
    if len(measured) < expected:
        done = ", ".join(f"{row.get('arch', args.archs[0])} {row['method']}" for row in measured)
        lines += ["", f"Partial: {len(measured)} of {expected} methods done ({done}); the run "
                  "was still going or was stopped."]
    lines.append("<!-- accuracy:end -->")
    return "\n".join(lines)


def _qkeras_version():
    try:
        import qkeras
    except ImportError:
        return "not installed"
    return qkeras.__version__


def target_lines(rows):
    """The targets of one architecture, each stated with the measured figures (only those measurable)."""
    acc = {row["method"]: row["keras"] for row in rows if row["keras"] is not None}
    lines = []
    slack = 1e-4   # points: accuracies come as float32 multiples of 1/N; compare what is printed

    def verdict(met):
        return "met" if met else "not met"

    if "float" in acc and "qnets-W3" in acc:
        gap = 100 * (acc["float"] - acc["qnets-W3"])
        lines.append(f"- qnets-W3 within 0.3 points of float: {gap:+.2f} points below "
                     f"-> {verdict(gap <= 0.3 + slack)}")
    for bits in ("W4A4", "W3A3", "W2A2"):
        ours = acc.get(f"qnets-{bits}")
        peers = [(f"{peer}-{bits}", acc[f"{peer}-{bits}"]) for peer in ("qkeras", "tfmot")
                 if f"{peer}-{bits}" in acc]
        if ours is not None and peers:
            names = " and ".join(name for name, _ in peers)
            theirs = " and ".join(f"{100 * value:.2f}%" for _, value in peers)
            lines.append(f"- qnets-{bits} above {names}: {100 * ours:.2f}% vs {theirs} "
                         f"-> {verdict(all(ours > value for _, value in peers))}")
    recal = [(row["method"], row["keras"], row["recal"]) for row in rows
             if row["method"].startswith("qnets") and row.get("recal") is not None]
    if recal:
        figures = ", ".join(f"{method} {100 * plain:.2f}% vs {100 * extra:.2f}% "
                            f"({100 * (plain - extra):+.2f})" for method, plain, extra in recal)
        missed = [method for method, plain, extra in recal if abs(100 * (plain - extra)) > 0.3 + slack]
        lines.append("- every tf_qnets row's plain evaluate within 0.3 points of its extra "
                     f"recalibrate_batch_norm figure: {figures} -> {verdict(not missed)}"
                     + (f" ({', '.join(missed)})" if missed else ""))
    ladder = [acc.get(f"qnets-{bits}") for bits in ("W4A4", "W3A3", "W2A2")]
    if all(value is not None for value in ladder):
        lines.append(f"- qnets W4A4 >= W3A3 >= W2A2: {100 * ladder[0]:.2f}% >= {100 * ladder[1]:.2f}% "
                     f">= {100 * ladder[2]:.2f}% -> {verdict(ladder[0] >= ladder[1] >= ladder[2])}")
    matches = [(_KERAS3.match(method), value) for method, value in acc.items()]
    keras3 = [(match.group(1), value) for match, value in matches
              if match and f"qnets-{match.group(1)}" in acc]
    if keras3:
        figures = ", ".join(f"{bits} {100 * value:.2f}% vs {100 * acc[f'qnets-{bits}']:.2f}% "
                            f"({100 * (value - acc[f'qnets-{bits}']):+.2f})" for bits, value in keras3)
        lines.append(f"- Keras 3 (JAX) against Keras 2, same float weights and recipe: {figures} "
                     "(a comparison, not a target)")
    if "float" in acc and "qnets-W3A3" in acc:
        gap = 100 * (acc["float"] - acc["qnets-W3A3"])
        lines.append(f"- qnets-W3A3 within 1 point of float: {gap:+.2f} points below "
                     f"-> {verdict(gap <= 1.0 + slack)}")
    return lines


def write_markdown(path, block):
    replace_block(path, "accuracy", block)


_REUSED = "reused from the previous run of this table"


def _parse_percent(text):
    text = text.strip()
    return float(text.rstrip("%")) / 100 if text.endswith("%") else None


def previous_rows(path, args):
    """Rows of the accuracy block in ``path`` for default methods this run does not measure.

    Each keeps its figures and notes and gains the note "reused from the previous run".
    """
    if not path or not os.path.exists(path):
        return []
    with open(path) as handle:
        text = handle.read()
    if "<!-- accuracy:begin -->" not in text:
        return []
    block = text.split("<!-- accuracy:begin -->", 1)[1].split("<!-- accuracy:end -->", 1)[0]
    headings = {arch_text(args, arch): arch for arch in ARCHS}
    rows, notes, arch = [], {}, None
    for line in block.splitlines():
        if line.startswith("### "):
            arch = headings.get(line[4:].strip())
            continue
        if arch is None or arch not in args.archs:
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 8 and cells[0] in DEFAULT_METHODS:
            method = cells[0]
            if method in args.methods:
                continue
            size = cells[6]
            rows.append({
                "arch": arch, "method": method, "init": _parse_percent(cells[2]),
                "keras": _parse_percent(cells[3]), "recal": _parse_percent(cells[4]),
                "tflite": _parse_percent(cells[5]),
                "bytes": float(size.split()[0]) * 1024 if size.endswith("KiB") else None,
                "seconds_per_epoch": float(cells[7]) if cells[7] not in ("-", "") else None,
                "note": ""})
        elif line.startswith("- ") and ": " in line:
            name = line[2:].split(": ", 1)[0]
            notes[(arch, name)] = line[2:].split(": ", 1)[1]
    for row in rows:
        kept = [part for part in notes.get((row["arch"], row["method"]), "").split("; ")
                if part and part != _REUSED]      # reused once more: said once
        row["note"] = "; ".join(kept + [_REUSED])
    return rows


def _merge(rows, reused):
    order = {method: index for index, method in enumerate(DEFAULT_METHODS + METHODS)}
    return sorted(reused + rows, key=lambda row: order.get(row["method"], len(order)))


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    wall = time.perf_counter()
    train, test = load(args)
    rows, float_seconds = [], {}
    block = None
    reused = previous_rows(args.markdown, args) if args.reuse_rows else []
    for arch in args.archs:
        float_net, float_seconds[arch] = float_model(args, train, arch)
        compile_model(float_net, 1e-3)
        for method in args.methods:
            rows.append(run_method(method, float_net, train, test, args, arch))
            block = markdown(_merge(rows, reused), args, float_seconds, time.perf_counter() - wall)
            if args.markdown:    # after every method, so that a stopped run keeps what it measured
                write_markdown(args.markdown, block)
        del float_net
        keras.backend.clear_session()
    print(block)
    if args.markdown:
        print(f"wrote {args.markdown}")
    return rows


if __name__ == "__main__":
    main()

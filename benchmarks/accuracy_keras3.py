"""The Keras 3 rows of ``benchmarks/accuracy.py``: one tf_qnets method on Keras 3 (JAX backend).

``accuracy.py`` runs in a Keras 2 process (tfmot and QKeras need ``tf_keras``), and the Keras
backend is fixed per process, so each ``qnets-keras3-W<w>[A<a>]`` method runs here, in a
child process started with ``KERAS_BACKEND=jax``::

    KERAS_BACKEND=jax python benchmarks/accuracy_keras3.py --method W3A3 --arch vgg \\
        --float-weights float_vgg.npz --row row.json [the accuracy.py settings]

The recipe is the Keras 2 tf_qnets rows' one, step for step: the same architecture built with
Keras 3 and given the Keras 2 float model's weights (``--float-weights``, saved by the parent),
``quantize_model`` with the same options and the same 1024 calibration images in batches of
128, Adam with the same cosine-decayed learning rate, ``TemperatureScheduler`` with the same
base, the same ``tf.data`` pipeline (shuffle seed and global seed, so the same batch order),
a plain ``evaluate``, the extra ``recalibrate_batch_norm`` check on saved and restored
weights, and ``export_tflite`` evaluated in the standalone runtime. The row is written as JSON
(``--row``) with the keys of ``accuracy.run_method``'s rows.
"""

import argparse
import json
import math
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import numpy as np  # noqa: E402

from keras3_vs_keras2 import load_data  # noqa: E402  (Fashion-MNIST, --data-dir and --subset)

RECALIBRATION_IMAGES = 4096      # as accuracy.py
CALIBRATION_IMAGES, CALIBRATION_BATCH = 1024, 128
REPRESENTATIVE_IMAGES = 512


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True, help="W<bits> or W<bits>A<bits>")
    parser.add_argument("--arch", choices=("vgg", "resnet"), required=True)
    parser.add_argument("--float-weights", required=True,
                        help=".npz of the Keras 2 float model's weights, in get_weights() order")
    parser.add_argument("--row", required=True, help="where to write the row (JSON)")
    parser.add_argument("--tflite", required=True, help="where to write the exported file")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--resnet-width", type=int, default=16)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine")
    parser.add_argument("--temperature-base", default="auto")
    parser.add_argument("--first-last", default="int8", choices=("float", "int8", "low_bit"))
    parser.add_argument("--recalibration-check", type=int, default=1)
    parser.add_argument("--subset", type=int, nargs=2, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gradient", default=None, choices=("exact", "wide", "smooth"))
    args = parser.parse_args(argv)
    match = re.fullmatch(r"W(\d)(?:A(\d))?", args.method)
    if match is None:
        parser.error(f"--method: {args.method!r} is not W<bits> or W<bits>A<bits>")
    args.w_bits = int(match.group(1))
    args.a_bits = int(match.group(2)) if match.group(2) else None
    if args.temperature_base != "auto":
        args.temperature_base = float(args.temperature_base)
    return args


def float_model(args, keras):
    """The architecture built with Keras 3, holding the Keras 2 float model's weights."""
    from fashion_mnist_model import build_cnn, build_resnet

    model = (build_cnn(width=args.width, keras_module=keras) if args.arch == "vgg"
             else build_resnet(width=args.resnet_width, keras_module=keras))
    with np.load(args.float_weights) as saved:
        weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(weights) != len(model.get_weights()):
        raise SystemExit(f"--float-weights holds {len(weights)} arrays; the Keras 3 {args.arch} "
                         f"has {len(model.get_weights())}")
    model.set_weights(weights)
    return model


def train_dataset(train, args):
    """accuracy.py's pipeline: the same shuffle seeds give the same batch order."""
    import tensorflow as tf

    tf.random.set_seed(args.seed)
    x, y = train
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=args.seed, reshuffle_each_iteration=True)
            .batch(args.batch_size).prefetch(tf.data.AUTOTUNE))


def evaluate(model, test):
    return float(model.evaluate(test[0], test[1], batch_size=256, verbose=0)[1])


def run(args):
    import keras

    import tf_qnets
    from tf_qnets.runtime import load_interpreter, predict

    if keras.backend.backend() != "jax":
        raise SystemExit(f"run with KERAS_BACKEND=jax (this process: {keras.backend.backend()})")
    start = time.perf_counter()
    label = f"{args.arch} qnets-keras3-{args.method}"
    train, test = load_data(args)
    float_net = float_model(args, keras)
    float_net.compile(metrics=["accuracy"], loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    print(f"[{label}] float model on Keras 3 {keras.__version__} ({keras.backend.backend()}): "
          f"{evaluate(float_net, test):.4f}", flush=True)
    images = train[0][:CALIBRATION_IMAGES]
    calibration = [images[i:i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)]
    model = tf_qnets.quantize_model(float_net, w_bits=args.w_bits, a_bits=args.a_bits,
                                    calibration_data=calibration, first_last=args.first_last,
                                    gradient=args.gradient, verbose=0)
    steps = args.epochs * math.ceil(len(train[0]) / args.batch_size)
    learning_rate = (args.learning_rate if args.lr_schedule == "constant"
                     else keras.optimizers.schedules.CosineDecay(args.learning_rate, steps))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    init_acc = evaluate(model, test)
    print(f"[{label}] test accuracy right after quantizing: {init_acc:.4f}", flush=True)
    keras.utils.set_random_seed(args.seed)
    epoch_seconds = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self._start)

    model.fit(train_dataset(train, args), epochs=args.epochs, verbose=2,
              callbacks=[EpochTimer(), tf_qnets.TemperatureScheduler(base=args.temperature_base)])
    keras_acc = evaluate(model, test)
    recal_acc, notes = None, []
    if args.recalibration_check:
        saved = model.get_weights()
        tf_qnets.recalibrate_batch_norm(model, train[0][:RECALIBRATION_IMAGES])
        recal_acc = evaluate(model, test)
        model.set_weights(saved)
        restored = evaluate(model, test)
        print(f"[{label}] plain {keras_acc:.4f}, with extra recalibrate_batch_norm "
              f"{recal_acc:.4f} (restored model: {restored:.4f})", flush=True)
        if restored != keras_acc:
            notes.append(f"model after restoring the weights scored {100 * restored:.2f}%, "
                         f"not {100 * keras_acc:.2f}%")
    tflite_acc, size = None, None
    try:
        tf_qnets.export_tflite(model, args.tflite, train[0][:REPRESENTATIVE_IMAGES])
        logits = predict(load_interpreter(args.tflite), test[0])
        tflite_acc = float(np.mean(np.argmax(logits, -1) == test[1]))
        size = os.path.getsize(args.tflite)
    except Exception as error:  # reported in the table, not hidden
        message = str(error).replace(ROOT + os.sep, "").splitlines()[0][:120]
        notes.append(f"TFLite: {type(error).__name__}: {message}")
    notes.insert(0, f"Keras 3 {keras.__version__} on {keras.backend.backend()}, same float "
                    "weights and recipe")
    row = {"arch": args.arch, "method": f"qnets-keras3-{args.method}", "init": init_acc,
           "keras": keras_acc, "recal": recal_acc, "tflite": tflite_acc, "bytes": size,
           "seconds_per_epoch": float(np.median(epoch_seconds)) if epoch_seconds else None,
           "note": "; ".join(notes)}
    print(f"[{label}] keras {keras_acc:.4f} recal {recal_acc} tflite {tflite_acc} size {size} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    with open(args.row, "w") as file:
        json.dump(row, file)
    return row


def main(argv=None):
    return run(parse_args(argv))


if __name__ == "__main__":
    main()

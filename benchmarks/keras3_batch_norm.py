"""Keras 3: does ``evaluate`` after ``fit`` measure what ``fit`` trained? BatchNormalization modes.

A small CNN with two BatchNormalization layers is trained in float on a synthetic
4-class image task (a fixed random template per class, scaled and shifted, under noise),
quantized with :func:`tf_qnets.keras3.quantize_model` (512 calibration images), fine-tuned
with Adam and ``TemperatureScheduler()`` (base "auto") and evaluated on held-out images, once per
``batch_norm`` mode. For ``"batch"`` it also prints what
:func:`tf_qnets.keras3.recalibrate_batch_norm` (on 2048 training images) gives, on the same
weights. Nothing is written to the docs::

    KERAS_BACKEND=jax python benchmarks/keras3_batch_norm.py              # W4A4, 2 epochs
    KERAS_BACKEND=jax python benchmarks/keras3_batch_norm.py --bits 2 --epochs 3
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tf_qnets.core.batch_norm import population_statistics  # noqa: E402
from tf_qnets.keras3 import (  # noqa: E402
    TemperatureScheduler,
    quantize_model,
    recalibrate_batch_norm,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", type=int, default=4, help="W and A bit width (default 4)")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (default 2)")
    parser.add_argument("--float-epochs", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=4096)
    parser.add_argument("--test-images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--noise", type=float, default=2.0, help="noise std (templates: 1)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def synthetic_images(samples, noise, seed, classes=4, size=16):
    """``x = a * template[y] + b + noise`` with a fixed template per class (same for every
    seed), a random gain ``a`` in [0.5, 1.5] and offset ``b``."""
    templates = np.random.default_rng(1234).normal(size=(classes, size, size, 1))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, samples)
    gain = rng.uniform(0.5, 1.5, size=(samples, 1, 1, 1))
    offset = rng.normal(0.0, 0.5, size=(samples, 1, 1, 1))
    x = gain * templates[y] + offset + rng.normal(0.0, noise, size=(samples, size, size, 1))
    return x.astype("float32"), y.astype("int32")


def build_cnn(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((16, 16, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv2"),
        keras.layers.BatchNormalization(name="bn2"),
        keras.layers.ReLU(name="relu2"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Conv2D(32, 3, padding="same", use_bias=False, name="conv3"),
        keras.layers.BatchNormalization(name="bn3"),
        keras.layers.ReLU(name="relu3"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(4, name="logits"),
    ], name="bn_cnn")


def remeasured_float_copy(model, x):
    """A copy of the float ``model`` whose BatchNormalization statistics are the exact ones
    of ``x`` (layer by layer), for a float baseline without moving-average lag."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            probe = keras.Model(copy.inputs[0], layer.input)
            inputs = (keras.ops.convert_to_numpy(probe(x[i:i + 256], training=False))
                      for i in range(0, len(x), 256))
            mean, variance = population_statistics(inputs, layer.axis)
            layer.moving_mean.assign(mean.astype("float32"))
            layer.moving_variance.assign(variance.astype("float32"))
    return copy


def _compile(model, learning_rate):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=True)


def main(argv=None):
    args = parse_args(argv)
    x_train, y_train = synthetic_images(args.train_images, args.noise, args.seed)
    x_test, y_test = synthetic_images(args.test_images, args.noise, args.seed + 1)
    start = time.time()
    float_model = build_cnn(args.seed)
    _compile(float_model, 3e-3)
    float_model.fit(x_train, y_train, epochs=args.float_epochs, batch_size=args.batch_size,
                    verbose=0)
    float_accuracy = float_model.evaluate(x_test, y_test, verbose=0)[1]
    remeasured = remeasured_float_copy(float_model, x_train[:2048])
    _compile(remeasured, 3e-3)
    remeasured_accuracy = remeasured.evaluate(x_test, y_test, verbose=0)[1]
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}; "
          f"W{args.bits}A{args.bits}, {args.epochs} epochs, Adam {args.learning_rate}, {args.train_images} train / "
          f"{args.test_images} test images, noise {args.noise}, seed {args.seed}")
    print(f"float model: test accuracy {float_accuracy:.4f} (Keras's moving statistics), "
          f"{remeasured_accuracy:.4f} (statistics re-measured on 2048 training images)")
    print("| batch_norm | hard test acc after quantize | fit's last-epoch train acc (soft) "
          "| evaluate test acc after fit | after recalibrate_batch_norm |")
    print("|---|---|---|---|---|")
    for mode in ("frozen", "batch"):
        keras.utils.set_random_seed(args.seed)
        qat = quantize_model(float_model, args.bits, args.bits, calibration_data=x_train[:512],
                             batch_norm=mode, verbose=0)
        _compile(qat, args.learning_rate)
        initial = qat.evaluate(x_test, y_test, verbose=0)[1]
        history = qat.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                          verbose=0, callbacks=[TemperatureScheduler()])
        trained = history.history["accuracy"][-1]
        after = qat.evaluate(x_test, y_test, verbose=0)[1]
        recalibrated = "-"
        if mode == "batch":
            recalibrate_batch_norm(qat, x_train[:2048])
            recalibrated = f"{qat.evaluate(x_test, y_test, verbose=0)[1]:.4f}"
        print(f"| {mode} | {initial:.4f} | {trained:.4f} | {after:.4f} | {recalibrated} |")
    print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()

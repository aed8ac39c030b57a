"""Training step time of the Keras 3 path: a small CNN, float vs quantized, under the active backend.

    KERAS_BACKEND=jax python benchmarks/keras3_step_time.py                  # W3A3, W4A4, W8A8
    KERAS_BACKEND=tensorflow python benchmarks/keras3_step_time.py --bits 3,3

The model (28x28x1 inputs: Conv2D(16, relu) - Conv2D(32) - BN - ReLU - MaxPool - Conv2D(32) -
BN - ReLU - MaxPool - Flatten - Dense(64, relu) - Dense(10)) trains on random data with
``compile(..., jit_compile=True)`` and ``fit``. For each setting it reports the first short
``fit`` (tracing and compiling included) and the mean step time of the next ``--epochs``
epochs, at temperatures 10 (soft forward) and 100 (hard forward, soft backward), and the
ratio to the float model's step. Prints a Markdown table.
"""

import argparse
import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tf_qnets.keras3 import quantize_model, set_temperature  # noqa: E402


def small_cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same"), keras.layers.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same"), keras.layers.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10),
    ])


def measure(model, x, y, batch_size, epochs, temperature=None):
    """``(first fit seconds, mean step seconds)``."""
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    if temperature is not None:
        set_temperature(model, weights=temperature, activations=temperature)
    start = time.perf_counter()
    model.fit(x[:2 * batch_size], y[:2 * batch_size], batch_size=batch_size, epochs=1, verbose=0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    steps = epochs * (len(x) // batch_size)
    return first, (time.perf_counter() - start) / steps


def bit_pairs(text):
    pairs = []
    for item in text.split(";"):
        w, a = (int(v) for v in item.split(","))
        pairs.append((w, a))
    return pairs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=bit_pairs, default=bit_pairs("3,3;4,4;8,8"),
                        help="'w,a' pairs separated by ';' (default '3,3;4,4;8,8')")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, args.samples)
    print(f"backend {keras.backend.backend()}, batch {args.batch_size}, {os.cpu_count()} CPUs")
    print("| model | T | first fit (s) | step (ms) | x float |")
    print("|---|---|---|---|---|")
    first, float_step = measure(small_cnn(), x, y, args.batch_size, args.epochs)
    print(f"| float | - | {first:.1f} | {1000 * float_step:.1f} | 1.00 |", flush=True)
    for w_bits, a_bits in args.bits:
        for temperature in (10.0, 100.0):
            qat = quantize_model(small_cnn(), w_bits, a_bits, calibration_data=x[:256], verbose=0)
            first, step = measure(qat, x, y, args.batch_size, args.epochs, temperature)
            print(f"| W{w_bits}A{a_bits} | {temperature:g} | {first:.1f} | {1000 * step:.1f} | "
                  f"{step / float_step:.2f} |", flush=True)


if __name__ == "__main__":
    main()

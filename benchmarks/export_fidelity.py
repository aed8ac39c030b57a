"""Fidelity of the integer TFLite export on Fashion-MNIST (issue 3, requirement 5).

Trains a small float CNN, quantizes it with first/last layers simulated at int8
(``first_last="int8"``) for W3A3 and W2A2 with uniform and k-means thresholds,
fine-tunes each briefly with the temperature schedule, exports it twice (int8 weight
storage and INT4 packing), and prints, on the full test set: top-1 agreement between
the Keras hard model and the TFLite file, both accuracies, the largest logit
difference, and the file sizes (float32 TFLite, int8, INT4).

Run (about 10 minutes on 2 CPU cores)::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/export_fidelity.py [--train-samples 20000]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets._keras import keras  # noqa: E402
from tf_qnets.datasets import load_fashion_mnist  # noqa: E402
from tf_qnets.export import export_tflite, verify_tflite  # noqa: E402

CONFIGS = [(3, 3, "uniform"), (3, 3, "kmeans"), (2, 2, "uniform"), (2, 2, "kmeans")]


def build_model():
    inputs = keras.Input((28, 28, 1))
    x = inputs
    for channels in (16, 32, 64):
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x) if channels < 64 else x
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def compile_model(model, lr):
    model.compile(keras.optimizers.Adam(lr),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--float-epochs", type=int, default=3)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=20000,
                        help="training samples used for QAT fine-tuning")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    x_train = (x_train.astype("float32") / 255.0)[..., None]
    x_test = (x_test.astype("float32") / 255.0)[..., None]

    start = time.time()
    model = build_model()
    compile_model(model, 2e-3)
    model.fit(x_train, y_train, batch_size=128, epochs=args.float_epochs, verbose=0)
    float_acc = model.evaluate(x_test, y_test, verbose=0)[1]
    print(f"float model: test accuracy {100 * float_acc:.2f}% ({time.time() - start:.0f} s)")

    rows = []
    folder = tempfile.mkdtemp()
    subset = slice(0, args.train_samples)
    for w_bits, a_bits, thresholds in CONFIGS:
        start = time.time()
        qat = tf_qnets.quantize_model(model, w_bits, a_bits, calibration_data=x_train[:1024],
                                      thresholds=thresholds, first_last="int8", verbose=0)
        compile_model(qat, 5e-4)
        qat.fit(x_train[subset], y_train[subset], batch_size=128, epochs=args.qat_epochs,
                verbose=0, callbacks=[tf_qnets.TemperatureScheduler(base=10, per_step=True)])
        name = f"W{w_bits}A{a_bits} {thresholds}"
        int8_path = os.path.join(folder, f"w{w_bits}a{a_bits}_{thresholds}_int8.tflite")
        int4_path = os.path.join(folder, f"w{w_bits}a{a_bits}_{thresholds}_int4.tflite")
        rep = x_train[:512]
        int8_report = export_tflite(qat, int8_path, rep, int4_weights=False)
        int4_report = export_tflite(qat, int4_path, rep, int4_weights="auto")
        check = verify_tflite(qat, int4_path, (x_test, y_test))
        check8 = verify_tflite(qat, int8_path, (x_test, y_test))
        rows.append((name, check, check8, int4_report.float_size_bytes, int8_report.size_bytes,
                     int4_report.size_bytes, time.time() - start))
        print(f"{name}: done in {time.time() - start:.0f} s", flush=True)

    print()
    print("| model | agreement | Keras-hard acc | TFLite acc | acc diff (pts) | max abs logit diff "
          "| int8-storage agreement | float TFLite bytes | int8 bytes | INT4 bytes | INT4/float |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, check, check8, float_size, int8_size, int4_size, _ in rows:
        print(f"| {name} | {100 * check.agreement:.2f}% | {100 * check.keras_accuracy:.2f}% | "
              f"{100 * check.tflite_accuracy:.2f}% | {100 * check.accuracy_diff:+.2f} | "
              f"{check.max_abs_diff:.4f} | {100 * check8.agreement:.2f}% | {float_size} | "
              f"{int8_size} | {int4_size} | {int4_size / float_size:.3f} |")


if __name__ == "__main__":
    main()

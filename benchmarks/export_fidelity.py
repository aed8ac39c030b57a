"""Fidelity of the integer TFLite export on Fashion-MNIST (issue 3, requirement 5).

Trains a small float CNN, quantizes it with first/last layers simulated at int8
(``first_last="int8"``) for W3A3 and W2A2 with uniform and k-means thresholds,
fine-tunes each briefly with the temperature schedule, exports it twice (int8 weight
storage and INT4 packing), and prints, on the full test set: top-1 agreement between
the Keras hard model and the TFLite file, both accuracies, the largest logit
difference, and the file sizes (float32 TFLite, int8, INT4).

Run (about 10 minutes on 2 free CPU cores; ``--cache-dir`` keeps trained weights so a rerun
only exports and verifies; ``--reference`` adds TFLite's reference kernels, ``--exact-uniform``
a second export of the uniform models with ``exact_uniform=True``)::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/export_fidelity.py --qat-epochs 2 --qat-lr 1e-4 \
        --cache-dir /tmp/export_fidelity --reference --exact-uniform
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402
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


def _format_row(name, check, check8, float_size, int8_size, int4_size):
    reference = f"{100 * check.reference.agreement:.2f}%" if check.reference else "-"
    return (f"| {name} | {100 * check.agreement:.2f}% | {reference} | "
            f"{100 * check.keras_accuracy:.2f}% | {100 * check.tflite_accuracy:.2f}% | "
            f"{100 * check.accuracy_diff:+.2f} | {check.max_abs_diff:.4f} | "
            f"{'-' if check8 is None else f'{100 * check8.agreement:.2f}%'} | {float_size} | "
            f"{'-' if int8_size is None else int8_size} | {int4_size} | "
            f"{int4_size / float_size:.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--float-epochs", type=int, default=3)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=20000,
                        help="training samples used for QAT fine-tuning")
    parser.add_argument("--qat-lr", type=float, default=1e-4, help="Adam learning rate of QAT")
    parser.add_argument("--cache-dir", default=None,
                        help="folder keeping the trained float and QAT weights between runs")
    parser.add_argument("--reference", action="store_true",
                        help="also run the INT4 files with TFLite's reference kernels")
    parser.add_argument("--exact-uniform", action="store_true",
                        help="also export uniform models with exact_uniform=True")
    parser.add_argument("--configs", default="all",
                        help="comma-separated subset such as 'W3A3 uniform,W2A2 kmeans'")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    x_train = (x_train.astype("float32") / 255.0)[..., None]
    x_test = (x_test.astype("float32") / 255.0)[..., None]

    start = time.time()
    model = build_model()
    compile_model(model, 2e-3)
    cache = args.cache_dir
    if cache:
        os.makedirs(cache, exist_ok=True)
    float_weights = os.path.join(cache, "float.weights.h5") if cache else None
    if float_weights and os.path.exists(float_weights):
        model.load_weights(float_weights)
    else:
        model.fit(x_train, y_train, batch_size=128, epochs=args.float_epochs, verbose=0)
        if float_weights:
            model.save_weights(float_weights)
    float_acc = model.evaluate(x_test, y_test, verbose=0)[1]
    print(f"float model: test accuracy {100 * float_acc:.2f}% ({time.time() - start:.0f} s)")

    rows = []
    folder = tempfile.mkdtemp()
    subset = slice(0, args.train_samples)
    wanted = None if args.configs == "all" else {c.strip() for c in args.configs.split(",")}
    for w_bits, a_bits, thresholds in CONFIGS:
        name = f"W{w_bits}A{a_bits} {thresholds}"
        if wanted is not None and name not in wanted:
            continue
        start = time.time()
        qat = tf_qnets.quantize_model(model, w_bits, a_bits, calibration_data=x_train[:1024],
                                      thresholds=thresholds, first_last="int8", verbose=0)
        compile_model(qat, args.qat_lr)
        qat_weights = (os.path.join(cache, f"w{w_bits}a{a_bits}_{thresholds}_e{args.qat_epochs}"
                                    f"_lr{args.qat_lr:g}_n{args.train_samples}", "ckpt")
                       if cache else None)
        if qat_weights and os.path.exists(qat_weights + ".index"):
            qat.load_weights(qat_weights).expect_partial()
        else:
            qat.fit(x_train[subset], y_train[subset], batch_size=128, epochs=args.qat_epochs,
                    verbose=0, callbacks=[tf_qnets.TemperatureScheduler(base=10, per_step=True)])
            if qat_weights:
                qat.save_weights(qat_weights)
        int8_path = os.path.join(folder, f"w{w_bits}a{a_bits}_{thresholds}_int8.tflite")
        int4_path = os.path.join(folder, f"w{w_bits}a{a_bits}_{thresholds}_int4.tflite")
        rep = x_train[:512]
        int8_report = export_tflite(qat, int8_path, rep, int4_weights=False)
        int4_report = export_tflite(qat, int4_path, rep, int4_weights="auto")
        kernels = "both" if args.reference else "default"
        check = verify_tflite(qat, int4_path, (x_test, y_test), kernels=kernels)
        check8 = verify_tflite(qat, int8_path, (x_test, y_test))
        rows.append((name, check, check8, int4_report.float_size_bytes, int8_report.size_bytes,
                     int4_report.size_bytes))
        if thresholds == "uniform" and args.exact_uniform:
            exact_path = os.path.join(folder, f"w{w_bits}a{a_bits}_exact_int4.tflite")
            exact_report = export_tflite(qat, exact_path, rep, exact_uniform=True)
            exact = verify_tflite(qat, exact_path, (x_test, y_test), kernels=kernels)
            rows.append((name + " exact_uniform", exact, None, exact_report.float_size_bytes,
                         None, exact_report.size_bytes))
        for row in rows[-2 if thresholds == "uniform" and args.exact_uniform else -1:]:
            print("row: " + _format_row(*row), flush=True)
        print(f"{name}: done in {time.time() - start:.0f} s", flush=True)

    print()
    print("| model | agreement (XNNPACK) | agreement (reference kernels) | Keras-hard acc | "
          "TFLite acc | acc diff (pts) | max abs logit diff | int8-storage agreement | "
          "float TFLite bytes | int8 bytes | INT4 bytes | INT4/float |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(_format_row(*row))

if __name__ == "__main__":
    main()

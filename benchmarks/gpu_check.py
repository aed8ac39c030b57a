"""The GPU check: Keras 3 on JAX with XLA, a ResNet-style model at batch 256 on Fashion-MNIST.

Run it with ``bash benchmarks/gpu_check.sh`` (which installs Keras from wheels placed beside
it when the machine has none, and sets ``KERAS_BACKEND=jax``). In one run it prints:

1. the machine: JAX version and devices, Keras version;
2. a float ResNet-8 (``examples/fashion_mnist_model.build_resnet``) trained briefly
   (``--float-epochs``, Adam 1e-3), its test accuracy; ``--calibration-images`` training
   images (512) calibrate every quantized copy;
3. training-step times at ``--batch-size`` under XLA (``jit_compile=True``, SGD) of the float
   model and of ``tf_qnets.quantize_model`` W3A2, W3A3 and W3A8 copies of it (T = 10): two
   untimed epochs each, then ``--rounds`` interleaved timed epochs of ``--timing-steps``
   batches (medians), and the ratios W3A3 / float and W3A8 / W3A2 (targets 1.3 and 1.1);
4. a W3A3 fine-tune of the float model (``--finetune-epochs``, Adam 2e-4,
   ``TemperatureScheduler()``) and its hard test accuracy from a plain ``evaluate``.

TensorFlow is never imported. ``--tiny`` shrinks everything for a CPU smoke run (CI).

    bash benchmarks/gpu_check.sh                     # on the GPU machine, about 3-6 minutes
    bash benchmarks/gpu_check.sh --tiny --data-dir /usr/share/datasets/fashion-mnist
"""

import argparse
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(ROOT, "examples"))

TARGETS = (("W3A3 / float", "W3A3", "float", 1.3), ("W3A8 / W3A2", "W3A8", "W3A2", 1.1))
TIME_CONFIGS = ("float", "W3A2", "W3A3", "W3A8")
TIMING_TEMPERATURE = 10.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four Fashion-MNIST IDX files (default: the usual "
                             "places, tf_qnets.datasets)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=16, help="ResNet first-stage channels")
    parser.add_argument("--float-epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--timing-steps", type=int, default=40, help="batches per timed epoch")
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per configuration")
    parser.add_argument("--subset", type=int, nargs=2, metavar=("TRAIN", "TEST"), default=None)
    parser.add_argument("--calibration-images", type=int, default=512)
    parser.add_argument("--tiny", action="store_true",
                        help="a smoke run: subset 512/256, batch 32, width 4, 1+1 epochs, "
                             "4 timed steps, 1 round, 64 calibration images")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.tiny:
        args.subset = args.subset or [512, 256]
        args.batch_size, args.width = 32, 4
        args.float_epochs = args.finetune_epochs = 1
        args.timing_steps, args.rounds, args.calibration_images = 4, 1, 64
    for name in ("batch_size", "width", "float_epochs", "finetune_epochs", "timing_steps",
                 "rounds", "calibration_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def ratio_lines(seconds):
    lines = []
    for label, numerator, denominator, bound in TARGETS:
        ratio = seconds[numerator] / seconds[denominator]
        lines.append(f"- {label} = {ratio:.2f} (target <= {bound}): "
                     f"{'met' if ratio <= bound else 'not met'}")
    return lines


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    import jax
    import keras
    import numpy as np
    from fashion_mnist_model import build_resnet

    import tf_qnets
    from keras3_train_speed import time_epochs
    from keras3_vs_keras2 import load_data     # Fashion-MNIST, --data-dir and --subset

    if keras.backend.backend() != "jax":
        raise SystemExit(f"run with KERAS_BACKEND=jax (bash benchmarks/gpu_check.sh); the "
                         f"backend is {keras.backend.backend()!r}")
    print(f"Python {platform.python_version()}, JAX {jax.__version__} on {jax.devices()}, "
          f"Keras {keras.__version__}", flush=True)
    (x_train, y_train), (x_test, y_test) = load_data(args)
    print(f"data: {len(x_train)} train, {len(x_test)} test images", flush=True)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    calibration = x_train[:args.calibration_images]

    keras.utils.set_random_seed(0)
    float_net = build_resnet(width=args.width, keras_module=keras)
    float_net.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"], jit_compile=True)
    start = time.perf_counter()
    float_net.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.float_epochs,
                  verbose=2)
    float_accuracy = float_net.evaluate(x_test, y_test, batch_size=args.batch_size, verbose=0)[1]
    print(f"float: {100 * float_accuracy:.2f}% after {args.float_epochs} epochs "
          f"({time.perf_counter() - start:.1f} s)", flush=True)

    def copy_of_float():
        model = build_resnet(width=args.width, keras_module=keras)
        model.set_weights(float_net.get_weights())
        return model

    def builder(name):
        def build():
            model = copy_of_float()
            if name != "float":
                a_bits = int(name.partition("A")[2])
                model = tf_qnets.quantize_model(model, w_bits=3, a_bits=a_bits,
                                                calibration_data=calibration, verbose=0)
                tf_qnets.set_temperature(model, weights=TIMING_TEMPERATURE,
                                         activations=TIMING_TEMPERATURE)
            model.compile(keras.optimizers.SGD(0.01, momentum=0.9), loss, jit_compile=True)
            return model
        return build

    steps = args.timing_steps
    reps = -(-steps * args.batch_size // len(x_train))
    x_time = np.concatenate([x_train] * reps)[:steps * args.batch_size]
    y_time = np.concatenate([y_train] * reps)[:steps * args.batch_size]
    print(f"step times: batch {args.batch_size}, {steps} steps per timed epoch, "
          f"{args.rounds} rounds", flush=True)
    seconds = time_epochs({name: builder(name) for name in TIME_CONFIGS}, x_time, y_time,
                          args.batch_size, args.rounds, log=lambda line: print(line, flush=True))

    keras.utils.set_random_seed(0)
    qat = tf_qnets.quantize_model(copy_of_float(), w_bits=3, a_bits=3,
                                  calibration_data=calibration, verbose=0)
    qat.compile(keras.optimizers.Adam(2e-4), loss, metrics=["accuracy"], jit_compile=True)
    start = time.perf_counter()
    qat.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.finetune_epochs, verbose=2,
            callbacks=[tf_qnets.TemperatureScheduler()])
    qat_accuracy = qat.evaluate(x_test, y_test, batch_size=args.batch_size, verbose=0)[1]
    finetune_seconds = time.perf_counter() - start

    lines = ["| model | step (ms) | / float |", "|---|---|---|"]
    lines += [f"| {name} | {1000 * seconds[name]:.2f} | {seconds[name] / seconds['float']:.2f} |"
              for name in TIME_CONFIGS]
    lines += [""] + ratio_lines(seconds) + [
        f"- float test accuracy after {args.float_epochs} epochs: {100 * float_accuracy:.2f}%",
        f"- W3A3 hard test accuracy after a {args.finetune_epochs}-epoch fine-tune (plain "
        f"evaluate): {100 * qat_accuracy:.2f}% ({finetune_seconds:.1f} s)",
        f"- whole run: {time.perf_counter() - started:.0f} s"]
    print("\n".join(lines), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"seconds": seconds, "float_accuracy": float_accuracy,
                       "w3a3_accuracy": qat_accuracy, "devices": str(jax.devices()),
                       "args": vars(args)}, handle, indent=1)
    return seconds, float_accuracy, qat_accuracy


if __name__ == "__main__":
    main()

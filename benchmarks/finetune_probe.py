"""One quick fine-tuning probe on a Fashion-MNIST subset: the numbers docs/train.md quotes.

Quantizes the float CNN cached by ``benchmarks/accuracy.py`` (run that first), prints the hard
test accuracy right after ``quantize_model`` and after fine-tuning, and the hard and float
accuracy on the first 6000 training images (to tell underfitting from a soft/hard gap)::

    python benchmarks/finetune_probe.py --w-bits 2 --a-bits 2 --temperature-base 10
    python benchmarks/finetune_probe.py --w-bits 2 --a-bits 2              # base 'auto'
    python benchmarks/finetune_probe.py --w-bits 4 --a-bits 4 --learning-rate 5e-5
    python benchmarks/finetune_probe.py --train-images 60000 --epochs 1 \
        --lr-schedule cosine --recalibrate-batch-norm --activation-gradient exact \
        --recalibrate-images 4096 60000
"""

import argparse
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import tf_qnets  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from tf_qnets.datasets import load_fashion_mnist  # noqa: E402

from fashion_mnist import temperature_base  # noqa: E402
from fashion_mnist_model import preprocess  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--w-bits", type=int, default=3)
    parser.add_argument("--a-bits", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=12000)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                        help="Adam's learning rate: constant, or cosine-decayed to 0 over the run")
    parser.add_argument("--activation-gradient", choices=("exact", "smooth", "wide"),
                        default="smooth",
                        help="quantize_model's activation_gradient (default: its default)")
    parser.add_argument("--recalibrate-batch-norm", action="store_true",
                        help="also report the test accuracy after tf_qnets.recalibrate_batch_norm")
    parser.add_argument("--recalibrate-images", type=int, nargs="+", default=[4096],
                        help="with --recalibrate-batch-norm: recalibrate on the first N training "
                             "images, once for each N given (default 4096)")
    parser.add_argument("--temperature-base", type=temperature_base, default="auto")
    parser.add_argument("--float-model", default="outputs/benchmark_accuracy/float_vgg_w32_e6_s0.keras")
    parser.add_argument("--data-dir", default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.exists(args.float_model):
        sys.exit(f"error: no float model at {args.float_model}; run "
                 "`python benchmarks/accuracy.py --float-epochs 6 --archs vgg --methods float` first.")
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data_dir)
    x_train, y_train = preprocess(x_train[:args.train_images]), y_train[:args.train_images].astype("int32")
    x_test, y_test = preprocess(x_test), y_test.astype("int32")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    float_net = keras.models.load_model(args.float_model)
    float_net.compile(loss=loss, metrics=["accuracy"])
    qat = tf_qnets.quantize_model(
        float_net, w_bits=args.w_bits, a_bits=args.a_bits, first_last="int8", verbose=0,
        activation_gradient=args.activation_gradient,
        calibration_data=tf.data.Dataset.from_tensor_slices(x_train[:1024]).batch(128))
    learning_rate = args.learning_rate
    if args.lr_schedule == "cosine":
        steps = args.epochs * math.ceil(len(x_train) / 128)
        learning_rate = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps)
    qat.compile(keras.optimizers.Adam(learning_rate), loss, ["accuracy"])

    def accuracy(model, x, y):
        return model.evaluate(x, y, batch_size=256, verbose=0)[1]

    print(f"test accuracy right after quantize_model: {accuracy(qat, x_test, y_test):.4f}")
    data = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
            .shuffle(len(x_train), seed=0).batch(128))
    keras.utils.set_random_seed(0)
    qat.fit(data, epochs=args.epochs, verbose=2,
            callbacks=[tf_qnets.TemperatureScheduler(base=args.temperature_base)])
    print(f"test accuracy after fine-tuning: {accuracy(qat, x_test, y_test):.4f}; on 6000 training "
          f"images: quantized {accuracy(qat, x_train[:6000], y_train[:6000]):.4f}, "
          f"float {accuracy(float_net, x_train[:6000], y_train[:6000]):.4f}")
    if args.recalibrate_batch_norm:
        for images in args.recalibrate_images:
            tf_qnets.recalibrate_batch_norm(qat, x_train[:images])
            print(f"test accuracy after recalibrate_batch_norm on {min(images, len(x_train))} "
                  f"training images: {accuracy(qat, x_test, y_test):.4f}")


if __name__ == "__main__":
    main()

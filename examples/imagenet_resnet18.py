"""ResNet-18 on ImageNet with the paper's recipe, on one device, several GPUs or several machines.

Quantization Networks (Yang et al., CVPR 2019), Sec. 4, ResNet-18: start from a float
ResNet-18, quantize the weights of every layer but the first and the last to 3 bits with
levels {-4, -2, -1, 0, 1, 2, 4} (``w_bits=3``; activations stay float unless ``--a-bits``),
then fine-tune for 55 epochs:

* SGD, momentum 0.9, learning rate 1e-3, times 0.1 at epochs 30 and 45;
* gradients clipped at global L2 norm 5;
* temperature ``T = 5 * epoch`` for epochs 1, 2, ... (``TemperatureScheduler(base=5)``,
  which sets ``T = 5 * (epoch + 1)`` for Keras' 0-based epoch: the same numbers).

Data: tensorflow-datasets' ``imagenet2012`` (build it once from the ILSVRC2012 archives,
see ``--manual-dir``). ``--mock-data N`` uses tensorflow-datasets' random mock examples
instead, to try the whole pipeline without ImageNet.

Runs::

    # one device
    python examples/imagenet_resnet18.py --float-weights resnet18_float.h5
    # every GPU of this machine (MirroredStrategy); --batch-size is the global batch
    python examples/imagenet_resnet18.py --strategy mirrored --batch-size 512 ...
    # several machines: on each, TF_CONFIG names the cluster and this worker's index
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        python examples/imagenet_resnet18.py --strategy multiworker --backup-dir /shared/backup
    # a smoke test without ImageNet (seconds on a CPU)
    python examples/imagenet_resnet18.py --mock-data 16 --image-size 32 --base-width 8 \\
        --batch-size 4 --epochs 2 --steps-per-epoch 2 --validation-steps 1

``--backup-dir`` adds ``keras.callbacks.BackupAndRestore``: a restarted job continues from
the last finished epoch with the right temperature, quantizer state and optimizer state.
"""

import argparse
import contextlib
import json
import os
import sys
import time

import tf_qnets
import tensorflow as tf
import tf_keras as keras
from tf_qnets.tf.distribute import is_chief, jit_compile_supported, strategy_from_name

PAPER = {
    "w_bits": 3, "epochs": 55, "learning_rate": 1e-3, "decay_epochs": (30, 45),
    "decay_factor": 0.1, "momentum": 0.9, "clip_norm": 5.0, "temperature_base": 5.0,
}
MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
STRATEGIES = ("one", "mirrored", "multiworker")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", choices=STRATEGIES, default="one",
                        help="one device, every local GPU (mirrored) or a TF_CONFIG cluster")
    parser.add_argument("--float-weights", default=None,
                        help="weights of a float ResNet-18 built by this script (.h5 or "
                             "checkpoint); random initialisation otherwise")
    parser.add_argument("--w-bits", type=int, default=PAPER["w_bits"])
    parser.add_argument("--a-bits", type=int, default=None, help="also quantize activations")
    parser.add_argument("--epochs", type=int, default=PAPER["epochs"])
    parser.add_argument("--batch-size", type=int, default=256, help="global batch size")
    parser.add_argument("--learning-rate", type=float, default=PAPER["learning_rate"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--base-width", type=int, default=64,
                        help="channels of the first stage (64: ResNet-18)")
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--validation-steps", type=int, default=None)
    parser.add_argument("--calibration-batches", type=int, default=8,
                        help="batches for activation calibration (with --a-bits)")
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data folder")
    parser.add_argument("--manual-dir", default=None,
                        help="folder with ILSVRC2012_img_{train,val}.tar, to build the dataset")
    parser.add_argument("--mock-data", type=int, default=None, metavar="N",
                        help="use N random mock examples per split instead of ImageNet")
    parser.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto",
                        help="auto: on unless the strategy has several CPU devices")
    parser.add_argument("--backup-dir", default=None, help="BackupAndRestore folder")
    parser.add_argument("--output-dir", default="outputs/imagenet_resnet18")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "image_size", "base_width", "calibration_batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def learning_rate_at(epoch, base=PAPER["learning_rate"]):
    """``base * 0.1 ** (number of decay epochs <= epoch)``; 0-based ``epoch``."""
    drops = sum(epoch >= boundary for boundary in PAPER["decay_epochs"])
    return base * PAPER["decay_factor"] ** drops


def basic_block(x, filters, stride, name):
    shortcut = x
    y = keras.layers.Conv2D(filters, 3, stride, padding="same", use_bias=False,
                            name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(epsilon=1e-5, name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(epsilon=1e-5, name=f"{name}_bn2")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, stride, use_bias=False,
                                       name=f"{name}_down_conv")(x)
        shortcut = keras.layers.BatchNormalization(epsilon=1e-5, name=f"{name}_down_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_relu2")(y)


def build_resnet18(num_classes=1000, image_size=224, base_width=64):
    """ResNet-18 (He et al. 2016) with tf_keras layers: 7x7/2 stem, 3x3/2 max pool, four
    stages of two basic blocks (``base_width`` x 1, 2, 4, 8 channels), global average pool,
    a dense classifier. With the defaults: 11,689,512 trainable parameters."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.ZeroPadding2D(3, name="stem_pad")(inputs)
    x = keras.layers.Conv2D(base_width, 7, 2, use_bias=False, name="stem_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, 2, name="stem_pool")(x)
    for stage in range(4):
        filters = base_width * 2 ** stage
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            x = basic_block(x, filters, stride, name=f"stage{stage + 1}_block{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, outputs, name="resnet18")


def preprocess(image_size, training):
    """uint8 image of any size -> normalised float32 ``image_size`` square."""
    def fn(image, label):
        image = tf.cast(image, tf.float32)
        if training:
            image = tf.image.resize(image, [image_size * 8 // 7, image_size * 8 // 7])
            image = tf.image.random_crop(image, [image_size, image_size, 3])
            image = tf.image.random_flip_left_right(image)
        else:
            image = tf.image.resize(image, [image_size * 8 // 7, image_size * 8 // 7])
            image = tf.image.central_crop(image, 7 / 8)
            image = tf.image.resize(image, [image_size, image_size])
        image = (image - MEAN) / STD
        return image, tf.cast(label, tf.int32)
    return fn


def load_imagenet(args):
    """``(train, validation, num_classes)`` batched with the global batch size."""
    import tensorflow_datasets as tfds  # the example's own dependency

    kwargs = {}
    if args.manual_dir:
        kwargs["download_and_prepare_kwargs"] = {
            "download_config": tfds.download.DownloadConfig(manual_dir=args.manual_dir)}
    splits, info = tfds.load("imagenet2012", split=["train", "validation"], as_supervised=True,
                             with_info=True, data_dir=args.data_dir, shuffle_files=True, **kwargs)
    train, validation = splits
    if args.steps_per_epoch:      # epochs of a fixed length: never run out of data
        train = train.repeat()
    if args.validation_steps:
        validation = validation.repeat()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train = (train.shuffle(10 * args.batch_size, seed=args.seed)
             .map(preprocess(args.image_size, True), num_parallel_calls=tf.data.AUTOTUNE)
             .batch(args.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
             .with_options(options))
    validation = (validation.map(preprocess(args.image_size, False),
                                 num_parallel_calls=tf.data.AUTOTUNE)
                  .batch(args.batch_size).prefetch(tf.data.AUTOTUNE).with_options(options))
    return train, validation, info.features["label"].num_classes


def data_source(args):
    """Real ImageNet, or tensorflow-datasets' mock examples with ``--mock-data``."""
    if args.mock_data is None:
        return contextlib.nullcontext()
    import tensorflow_datasets as tfds

    return tfds.testing.mock_data(num_examples=args.mock_data)


def main(argv=None):
    args = parse_args(argv)
    try:
        strategy = strategy_from_name(args.strategy)
    except ValueError as error:
        sys.exit(f"error: {error}")
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.time()
    with data_source(args):
        return train_and_save(args, strategy, start)


def train_and_save(args, strategy, start):
    train, validation, num_classes = load_imagenet(args)
    print(f"[setup] strategy {args.strategy}: {strategy.num_replicas_in_sync} replica(s), "
          f"global batch {args.batch_size}, {num_classes} classes")

    jit_compile = {"on": True, "off": False}.get(
        args.jit_compile, jit_compile_supported(strategy))
    with strategy.scope():
        float_model = build_resnet18(num_classes, args.image_size, args.base_width)
        if args.float_weights:
            float_model.load_weights(args.float_weights)
        else:
            print("[setup] no --float-weights: starting from random weights (the paper "
                  "starts from a trained float ResNet-18)")
        calibration = None
        if args.a_bits is not None:
            calibration = train.map(lambda image, label: image).take(args.calibration_batches)
        qat = tf_qnets.quantize_model(float_model, w_bits=args.w_bits, a_bits=args.a_bits,
                                      calibration_data=calibration, first_last="float",
                                      verbose=0)
        qat.compile(
            optimizer=keras.optimizers.SGD(args.learning_rate, momentum=PAPER["momentum"],
                                           global_clipnorm=PAPER["clip_norm"]),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=jit_compile,
        )
    print(f"[setup] {tf_qnets.count_quantizers(qat)} low-bit quantizers, "
          f"jit_compile={jit_compile}")

    callbacks = [
        keras.callbacks.LearningRateScheduler(
            lambda epoch: learning_rate_at(epoch, args.learning_rate)),
        tf_qnets.TemperatureScheduler(base=PAPER["temperature_base"], verbose=1),
    ]
    if args.backup_dir:
        callbacks.insert(0, keras.callbacks.BackupAndRestore(args.backup_dir))
    history = qat.fit(train, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                      validation_data=validation, validation_steps=args.validation_steps,
                      callbacks=callbacks, verbose=2)

    # Only the chief writes the final model; the other workers write to scratch files.
    chief = is_chief(strategy)
    name = "resnet18_qat.keras" if chief else f"scratch_{strategy.cluster_resolver.task_id}.keras"
    path = os.path.join(args.output_dir, name)
    qat.save(path)
    results = {
        "strategy": args.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "jit_compile": jit_compile,
        "quantizers": tf_qnets.count_quantizers(qat),
        "temperature": history.history["temperature"],
        "learning_rate": [float(v) for v in history.history["lr"]],
        "val_accuracy": history.history["val_accuracy"],
        "model": path,
        "seconds": time.time() - start,
    }
    if chief:
        with open(os.path.join(args.output_dir, "results.json"), "w") as handle:
            json.dump(results, handle, indent=2)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()

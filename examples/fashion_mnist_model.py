"""The float networks used by the Fashion-MNIST example and benchmarks.

``build_cnn``: a small VGG-style network with real capacity (Conv-BN-ReLU blocks, as the
paper's recipe expects: activation quantizers sit after each ReLU)::

    conv3x3(32) - BN - ReLU - conv3x3(32) - BN - ReLU - maxpool
    conv3x3(64) - BN - ReLU - conv3x3(64) - BN - ReLU - maxpool
    conv3x3(128) - BN - ReLU - global average pool - dense(10)

``build_resnet``: a small residual network of basic blocks (the accuracy benchmark's second
architecture)::

    conv3x3(16) - BN - ReLU                                  stem
    3 stages of basic blocks, widths 16, 32, 64, first strides 1, 2, 2:
        conv3x3 - BN - ReLU - conv3x3 - BN  (+ shortcut)  - Add - ReLU
        shortcut: identity, or conv1x1(stride) - BN where the shape changes
    global average pool - dense(10)
"""

import math

import numpy as np

__all__ = ["build_cnn", "build_resnet", "epoch_batches", "preprocess"]


def _keras(keras_module):
    """The Keras to build with: ``tf_keras`` (Keras 2, the default) or the module given
    (``import keras`` for Keras 3: the same layers and names on either)."""
    if keras_module is not None:
        return keras_module
    import tf_keras

    return tf_keras


def build_cnn(width=32, num_classes=10, input_shape=(28, 28, 1), keras_module=None):
    """The example CNN; ``width`` scales every layer's channel count. Built with ``tf_keras``
    unless ``keras_module`` gives another Keras (``keras`` 3)."""
    keras = _keras(keras_module)
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for block, channels in enumerate((width, 2 * width)):
        for conv in range(2):
            x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False,
                                    name=f"conv{block + 1}_{conv + 1}")(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{block + 1}_{conv + 1}")(x)
            x = keras.layers.ReLU(name=f"relu{block + 1}_{conv + 1}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{block + 1}")(x)
    x = keras.layers.Conv2D(4 * width, 3, padding="same", use_bias=False, name="conv3")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn3")(x)
    x = keras.layers.ReLU(name="relu3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="fashion_cnn")


def build_resnet(width=16, num_classes=10, input_shape=(28, 28, 1), blocks_per_stage=1,
                 keras_module=None):
    """A small ResNet (basic blocks); ``width`` is the first stage's channel count.

    With the default ``blocks_per_stage=1`` it has 7 3x3 convolutions, 2 projection
    shortcuts and the dense layer (a ResNet-8); ``blocks_per_stage=2`` gives a ResNet-14.
    Convolutions have no bias (a BatchNormalization follows each) and every ReLU is its own
    ``ReLU`` layer, where tf_qnets puts its activation quantizers.
    """
    if blocks_per_stage < 1:
        raise ValueError(f"`blocks_per_stage` must be at least 1, got {blocks_per_stage!r}.")
    keras = _keras(keras_module)

    def conv_bn(x, channels, kernel, stride, name):
        x = keras.layers.Conv2D(channels, kernel, strides=stride, padding="same", use_bias=False,
                                name=f"{name}_conv")(x)
        return keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)

    inputs = keras.Input(input_shape, name="image")
    x = conv_bn(inputs, width, 3, 1, "stem")
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, (channels, stride) in enumerate(((width, 1), (2 * width, 2), (4 * width, 2))):
        for block in range(blocks_per_stage):
            name = f"s{stage + 1}b{block + 1}"
            block_stride = stride if block == 0 else 1
            y = conv_bn(x, channels, 3, block_stride, f"{name}_1")
            y = keras.layers.ReLU(name=f"{name}_relu1")(y)
            y = conv_bn(y, channels, 3, 1, f"{name}_2")
            if block_stride != 1 or x.shape[-1] != channels:
                shortcut = conv_bn(x, channels, 1, block_stride, f"{name}_short")
            else:
                shortcut = x
            x = keras.layers.Add(name=f"{name}_add")([y, shortcut])
            x = keras.layers.ReLU(name=f"{name}_relu2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"fashion_resnet{6 * blocks_per_stage + 2}")


def preprocess(images):
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]."""
    return (images.astype("float32") / 255.0)[..., None]


def epoch_batches(keras, x, y, batch_size, seed):
    """Batches in a seeded order that changes every epoch, identical on both Kerases."""
    base = getattr(keras.utils, "PyDataset", None) or keras.utils.Sequence

    class Batches(base):
        def __init__(self):
            super().__init__()
            self.epoch = 0
            self.order = np.random.default_rng([seed, 0]).permutation(len(x))

        def __len__(self):
            return math.ceil(len(x) / batch_size)

        def __getitem__(self, index):
            chosen = self.order[index * batch_size:(index + 1) * batch_size]
            return x[chosen], y[chosen]

        def on_epoch_end(self):
            self.epoch += 1
            self.order = np.random.default_rng([seed, self.epoch]).permutation(len(x))

    return Batches()

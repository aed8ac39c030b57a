"""The float CNN used by the Fashion-MNIST example and benchmarks.

A small VGG-style network with real capacity (Conv-BN-ReLU blocks, as the paper's
recipe expects: activation quantizers sit after each ReLU)::

    conv3x3(32) - BN - ReLU - conv3x3(32) - BN - ReLU - maxpool
    conv3x3(64) - BN - ReLU - conv3x3(64) - BN - ReLU - maxpool
    conv3x3(128) - BN - ReLU - global average pool - dense(10)
"""

from tf_qnets._keras import keras

__all__ = ["build_cnn", "preprocess"]


def build_cnn(width=32, num_classes=10, input_shape=(28, 28, 1)):
    """The example CNN; ``width`` scales every layer's channel count."""
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


def preprocess(images):
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]."""
    return (images.astype("float32") / 255.0)[..., None]

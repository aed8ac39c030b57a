"""Keras 3 tests: run under any backend with ``KERAS_BACKEND=tensorflow|jax``.

Run from the repository root (the main tests' conftest selects Keras 2 and must not load)::

    KERAS_BACKEND=jax python -m pytest tests/keras3 --confcutdir tests/keras3 -q

This file imports keras and numpy only: under JAX, TensorFlow is never imported.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session(free_memory=False)   # gc.collect() costs ~0.4 s a test


@pytest.fixture
def backend():
    return keras.backend.backend()


def build_cnn(seed=0, num_classes=4):
    """Conv2D(fused relu) - Conv2D - BN - ReLU - MaxPool - DepthwiseConv2D - ReLU - Flatten - Dense - Dense."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 2)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_first"),
        keras.layers.Conv2D(6, 3, padding="same", name="conv_mid"),
        keras.layers.BatchNormalization(name="bn_mid"),
        keras.layers.ReLU(name="relu_mid"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.DepthwiseConv2D(3, padding="same", name="dwconv"),
        keras.layers.ReLU(name="relu_dw"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(8, activation="relu", name="dense_mid"),
        keras.layers.Dense(num_classes, name="dense_last"),
    ], name="small_cnn")


def build_residual(seed=0, num_classes=3):
    """Functional: Conv1D stem, a residual Add, a Concatenate, GlobalAveragePooling1D."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 3), name="signal")
    x = keras.layers.Conv1D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.Conv1D(8, 3, padding="same", activation="relu", name="block_conv1")(x)
    y = keras.layers.Conv1D(8, 3, padding="causal", name="block_conv2")(y)
    y = keras.layers.Add(name="add")([x, y])
    y = keras.layers.Activation("relu", name="block_relu")(y)
    z = keras.layers.Conv1D(4, 1, activation="relu", name="side_conv")(y)
    y = keras.layers.Concatenate(name="concat")([y, z])
    y = keras.layers.GlobalAveragePooling1D(name="gap")(y)
    y = keras.layers.Dense(6, activation="relu", name="head")(y)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classes")(y)
    return keras.Model(inputs, outputs, name="small_residual")


def classification_data(shape, num_classes, samples=64, seed=0):
    """Random inputs and labels that a small model can fit (labels from a fixed projection)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples,) + tuple(shape)).astype("float32")
    projection = rng.normal(size=(int(np.prod(shape)), num_classes))
    y = np.argmax(x.reshape(samples, -1) @ projection, axis=1).astype("int32")
    return x, y

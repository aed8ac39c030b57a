"""tf_keras arithmetic on tensors (``x + y``, ``x * y``) becomes Add / Multiply layers, quantized.

A user's residual block written ``x = x + shortcut`` is a TFOpLambda: before, the Keras model
added in float where the file's ADD rounds the sum to int8, and the ReLU staircase after it
read different values.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402
from tf_qnets.keras2.operator_layers import operator_layers, replace_operator_layers  # noqa: E402


def residual_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    y = keras.layers.Conv2D(8, 3, padding="same", name="branch")(x)
    y = keras.layers.BatchNormalization(name="branch_bn")(y)
    x = keras.layers.ReLU(name="block_relu")(x + y)                       # TFOpLambda add
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True, name="pool")(x)
    gate = keras.layers.Conv2D(8, 1, activation="sigmoid", name="gate")(gate)
    x = tf.math.multiply(x, gate)                                         # broadcast multiply
    x = keras.layers.Conv2D(8, 1, activation="relu", name="project")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(x))


def _images(count, seed):
    return np.random.default_rng(seed).uniform(0, 1, (count, 10, 10, 3)).astype(np.float32)


def test_operators_on_two_tensors_become_layers_of_the_same_name():
    model = residual_model()
    found = operator_layers(model)
    assert sorted(kind for kind, _ in found.values()) == ["Add", "Multiply"]
    rebuilt = replace_operator_layers(model, found)
    for name, (kind, _) in found.items():
        assert type(rebuilt.get_layer(name)).__name__ == kind
        assert type(model.get_layer(name)).__name__ == "TFOpLambda"     # the user's, untouched
    x = _images(4, 0)
    np.testing.assert_allclose(rebuilt(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)


def test_the_sum_is_rounded_in_keras_and_the_file_agrees(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qat = tf_qnets.quantize_model(residual_model(), w_bits=4, a_bits=4, first_last="int8",
                                      calibration_data=_images(32, 1), verbose=0)
    # the sum's rounding is the ReLU staircase after it (fused, add_staircase); the gated
    # product is an int8 tensor of its own
    assert type(qat.get_layer("tf.__operators__.add")).__name__ == "Add"
    assert "quant_tf.math.multiply" in [layer.name for layer in qat.layers]
    report = tf_qnets.export_tflite(qat, str(tmp_path / "m.tflite"), _images(32, 1),
                                    verify_data=_images(128, 2))
    assert report.verification.agreement == 1.0, report.verification
    # left as TFOpLambda layers, the top-1 still agreed here but logits differed by 0.0034
    assert report.verification.max_abs_diff < 1e-3, report.verification


def test_a_model_keras_cannot_rebuild_is_left_as_it_is():
    """A layer class Keras does not know (not registered) makes ``from_config`` fail: the
    operators stay TFOpLambda layers instead of ``quantize_model`` failing with a TypeError."""

    class Unregistered(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    inputs = keras.Input((4, 4, 2))
    a = keras.layers.Conv2D(2, 1, name="a")(inputs)
    x = Unregistered(name="custom")(a) + a
    model = keras.Model(inputs, x)
    found = operator_layers(model)
    assert [kind for kind, _ in found.values()] == ["Add"]
    assert replace_operator_layers(model, found) is model

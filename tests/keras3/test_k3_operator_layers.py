"""Keras 3: ``x + y`` / ``x * y`` nodes between two tensors become Add / Multiply layers
(tf_qnets.keras3.operator_layers), so that they are quantized as the layers are."""

import keras
import numpy as np

import tf_qnets
from tf_qnets.core.add_margin import add_roundings
from tf_qnets.keras3.describe_network import describe_network
from tf_qnets.keras3.operator_layers import operator_layers, replace_operator_layers


def _model():
    """A residual ``x + r`` before a ReLU, a squeeze-and-excitation ``x * gate`` (broadcast over
    the spatial axes) and a constant ``x + 3.0``."""
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.ReLU(name="stem_relu")(x)
    r = keras.layers.Conv2D(8, 3, padding="same", name="branch")(x)
    r = keras.layers.BatchNormalization(name="branch_bn")(r)
    x = keras.layers.ReLU(name="block_relu")(x + r)
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    gate = keras.layers.Conv2D(8, 1, activation="sigmoid", name="excite")(gate)
    x = x * gate
    x = keras.layers.ReLU(name="shifted")(x + 3.0)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def _operation_kinds(model):
    return sorted(type(op).__name__ for op in model.operations
                  if not isinstance(op, keras.layers.Layer))


def test_two_tensor_nodes_become_layers_that_compute_the_same_values():
    model = _model()
    found = operator_layers(model)
    assert sorted(found.values()) == ["Add", "Multiply"]       # not the constant x + 3.0
    rebuilt = replace_operator_layers(model, found)
    for name, kind in found.items():
        assert type(rebuilt.get_layer(name)).__name__ == kind
    assert _operation_kinds(rebuilt) == ["Add"]                 # x + 3.0 stays an operation
    assert _operation_kinds(model) == ["Add", "Add", "Multiply"]   # the user's model as it was
    x = np.random.default_rng(0).uniform(0, 1, (4, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rebuilt(x)),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-6, atol=1e-6)


def test_quantize_model_gives_the_residual_sum_to_the_add_requantization():
    data = np.random.default_rng(0).uniform(0, 1, (32, 12, 12, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(_model(), w_bits=4, a_bits=4, calibration_data=data, verbose=0)
    kinds = {rounding.layer: rounding.kind for rounding in add_roundings(describe_network(qat))}
    assert kinds.get("block_relu") == "staircase"     # an Add layer feeding the ReLU staircase


def test_a_sequential_model_has_no_operator_nodes():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert operator_layers(model) == {} and replace_operator_layers(model, {}) is model

"""SeparableConv2D on Keras 3: split into DepthwiseConv2D -> 1x1 Conv2D, both quantized.

The same split as tf_keras (tests/test_separable.py, where the exported file is checked too):
the split model computes the separable layer's function, Sequential or Functional, and
``quantize_model`` gives both parts weight quantizers (the user's model keeps its layer).
"""

import keras
import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras3 import QNetsWrapper
from tf_qnets.keras3.split_separable import split_separable_convolutions


def _functional():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="stem")(inputs)
    x = keras.layers.SeparableConv2D(8, 3, padding="same", depth_multiplier=2,
                                     activation="relu", name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(x))


def _sequential():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((10, 10, 3)),
                             keras.layers.SeparableConv2D(5, 3, use_bias=False, name="sep"),
                             keras.layers.GlobalAveragePooling2D(name="gap")])


@pytest.mark.parametrize("build", [_functional, _sequential])
def test_the_split_computes_the_separable_layer(build):
    model = build()
    split = split_separable_convolutions(model, {"sep": "sep_depthwise"})
    assert type(split.get_layer("sep_depthwise")).__name__ == "DepthwiseConv2D"
    assert type(split.get_layer("sep")).__name__ == "Conv2D"
    assert type(model.get_layer("sep")).__name__ == "SeparableConv2D"
    x = np.random.default_rng(1).normal(size=(3, 10, 10, 3)).astype("float32")
    expected = np.asarray(model(x))
    np.testing.assert_allclose(np.asarray(split(x)), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


def test_quantize_model_quantizes_both_parts():
    x = np.random.default_rng(2).uniform(0, 1, (16, 10, 10, 3)).astype("float32")
    qat = tf_qnets.quantize_model(_functional(), w_bits=3, a_bits=4, first_last="int8",
                                  calibration_data=x, verbose=0)
    for name in ("sep_depthwise", "sep"):
        layer = qat.get_layer(name)
        assert isinstance(layer, QNetsWrapper) and layer.weight_quantizer is not None, name
    assert type(qat.get_layer("sep_depthwise").layer).__name__ == "DepthwiseConv2D"

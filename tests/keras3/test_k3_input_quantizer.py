"""The Keras 3 model rounds its input as the integer file does (tf_qnets.keras3.input_quantizer)."""

import keras
import numpy as np
import pytest
from keras import ops

from tf_qnets.core.input_range import calibrated_input_range
from tf_qnets.keras3 import quantize_model
from tf_qnets.keras3.input_quantizer import InputQuantizer, input_ranges


def _functional():
    inputs = keras.Input((10, 10, 3), name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def _sequential():
    return keras.Sequential([keras.Input((10, 10, 3), name="image"),
                             keras.layers.Conv2D(6, 3, name="conv"), keras.layers.ReLU(name="relu"),
                             keras.layers.GlobalAveragePooling2D(name="gap"),
                             keras.layers.Dense(4, name="head")])


def _data():
    return np.random.default_rng(0).normal(0.4, 0.3, (80, 10, 10, 3)).astype(np.float32)


def _on_grid(x, lo, hi):
    scale = (hi - lo) / 255.0
    zero = np.round(-lo / scale)
    return ((np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)


@pytest.mark.parametrize("build", [_functional, _sequential])
def test_the_model_rounds_its_input_with_the_calibrated_range(build):
    data = _data()
    qat = quantize_model(build(), w_bits=3, a_bits=3, calibration_data=data[:48], verbose=0)
    assert isinstance(qat.get_layer("image_int8"), InputQuantizer)
    assert type(qat) is type(build())
    lo, hi = calibrated_input_range([data[:48]])
    assert input_ranges(qat) == {"image_int8": pytest.approx((lo, hi))}
    x = data[48:]
    assert np.mean(np.abs(_on_grid(x, lo, hi) - x) > 1e-6) > 0.9
    np.testing.assert_allclose(ops.convert_to_numpy(qat(x, training=False)),
                               ops.convert_to_numpy(qat(_on_grid(x, lo, hi), training=False)),
                               rtol=0, atol=1e-6)


def test_weight_only_models_get_no_input_quantizer():
    qat = quantize_model(_functional(), w_bits=3, first_last="low_bit", verbose=0)
    assert input_ranges(qat) == {}
    assert not any(isinstance(layer, InputQuantizer) for layer in qat.layers)


def test_the_range_survives_saving(tmp_path):
    qat = quantize_model(_functional(), w_bits=3, a_bits=3, calibration_data=_data()[:48],
                         verbose=0)
    path = str(tmp_path / "qat.keras")
    qat.save(path)
    assert input_ranges(keras.saving.load_model(path)) == input_ranges(qat)

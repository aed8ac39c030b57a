"""The Keras 2 model rounds its input as the integer file does (tf_qnets.keras2.input_quantizer)."""

import numpy as np
import pytest

import tf_qnets
from tf_qnets.core.input_range import calibrated_input_range
from tf_qnets.keras2.backend import keras
from tf_qnets.keras2.input_quantizer import input_ranges
from tf_qnets.runtime import load_interpreter


def _model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Conv2D(8, 1, use_bias=False, name="project")(x)   # linear, int8 output
    x = keras.layers.BatchNormalization(name="project_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="head")(x))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    # continuous values: almost none lies on the file's int8 input grid
    return rng.normal(0.4, 0.3, (96, 12, 12, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def qat(data):
    return tf_qnets.quantize_model(_model(), w_bits=3, a_bits=3, calibration_data=data[:64],
                                   first_last="int8", verbose=0)


def _on_grid(x, lo, hi):
    scale = (hi - lo) / 255.0
    zero = np.round(-lo / scale)
    return ((np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)


def test_the_range_is_the_calibration_datas(qat, data):
    assert input_ranges(qat) == {"image_int8": calibrated_input_range([data[:64]])}


def test_the_hard_model_sees_its_input_on_the_int8_grid(qat, data):
    lo, hi = input_ranges(qat)["image_int8"]
    x = data[64:]
    assert np.mean(np.abs(_on_grid(x, lo, hi) - x) > 1e-6) > 0.9   # rounding does move them
    np.testing.assert_allclose(qat(x, training=False), qat(_on_grid(x, lo, hi), training=False),
                               rtol=0, atol=1e-6)


def test_the_file_uses_the_models_range_and_agrees(qat, data, tmp_path):
    path = str(tmp_path / "model.tflite")
    # other representative data than quantize_model's: the file still takes the model's range
    tf_qnets.export_tflite(qat, path, data[64:] * 1.5)
    detail = load_interpreter(path).get_tensor_details()
    lo, hi = input_ranges(qat)["image_int8"]
    scale = [t["quantization"][0] for t in detail
             if t["dtype"] == np.int8 and tuple(t["shape"][1:]) == (12, 12, 3)][0]
    assert scale == pytest.approx((hi - lo) / 255.0, rel=1e-6)
    report = tf_qnets.verify_tflite(qat, path, data[64:])
    assert report.agreement == 1.0
    out_step = max(t["quantization"][0] for t in detail if tuple(t["shape"][1:]) == (5,))
    assert report.max_abs_diff <= out_step * 1.01


def test_weight_only_models_get_no_input_quantizer():
    qat = tf_qnets.quantize_model(_model(), w_bits=3, verbose=0)
    assert input_ranges(qat) == {}
    assert "QuantizeLayer" not in {type(layer).__name__ for layer in qat.layers}


def test_the_range_survives_saving(qat, tmp_path):
    path = str(tmp_path / "qat.keras")
    qat.save(path)
    assert input_ranges(tf_qnets.load_model(path)) == input_ranges(qat)

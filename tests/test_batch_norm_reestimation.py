"""BatchNormalization statistics are re-estimated after the weights are quantized.

Quantizing a kernel per tensor changes the scale of each output channel; a following
BatchNormalization still holding the float model's moving statistics then normalises
wrongly in inference mode (what ``evaluate``, activation calibration and export use).
``quantize_model`` re-measures them on the calibration data, layer by layer.
"""

import warnings

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras
from tf_qnets.keras2.init import layer_tensor_in


def conv_bn_model(seed=0):
    """conv - BN - ReLU - conv - BN - ReLU - GAP - dense, BN statistics far from the truth."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 2), name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.ReLU(name="relu_a")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_b")(x)
    x = keras.layers.BatchNormalization(name="bn_b")(x)
    x = keras.layers.ReLU(name="relu_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for name in ("bn_a", "bn_b"):
        layer = model.get_layer(name)
        channels = layer.moving_mean.shape[0]
        layer.gamma.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
        layer.beta.assign(rng.normal(0.0, 0.5, channels).astype("float32"))
        layer.moving_mean.assign(rng.normal(0.0, 3.0, channels).astype("float32"))
        layer.moving_variance.assign(rng.uniform(5.0, 9.0, channels).astype("float32"))
    return model


def batch_norm_output(qat, name, data):
    probe = keras.Model(qat.inputs, layer_tensor_in(qat, qat.get_layer(name), "output"))
    return probe.predict(data, verbose=0)


@pytest.mark.parametrize("w_bits,a_bits", [(2, 2), (3, None)])
def test_each_batch_norm_normalises_its_new_inputs_on_the_calibration_data(w_bits, a_bits,
                                                                          monkeypatch):
    # the walk's own statistics: quantize_model's last step (moving the folded biases onto
    # the integer file's lattice, up to half a unit each) shifts bn_b's inputs after the walk
    # measured them (by up to 0.011 of its output mean here, a 2-bit model)
    monkeypatch.setattr("tf_qnets.keras2.api.snap_if_describable", lambda *args: None)
    data = np.random.default_rng(1).normal(size=(96, 8, 8, 2)).astype("float32")
    model = conv_bn_model()
    qat = tf_qnets.quantize_model(model, w_bits=w_bits, a_bits=a_bits, calibration_data=data,
                                  first_last="low_bit", verbose=0)
    for name in ("bn_a", "bn_b"):
        layer = qat.get_layer(name)
        out = batch_norm_output(qat, name, data).reshape(-1, layer.moving_mean.shape[0])
        variance = layer.moving_variance.numpy()
        gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
        # inference-mode BN of the calibration data: per channel mean beta, std gamma * sqrt(v / (v + eps))
        np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-3)
        np.testing.assert_allclose(out.std(axis=0), gamma * np.sqrt(variance / (variance + layer.epsilon)),
                                   rtol=1e-3)


def test_the_float_models_statistics_are_not_touched():
    model = conv_bn_model()
    before = [w.copy() for w in model.get_weights()]
    data = np.random.default_rng(1).normal(size=(32, 8, 8, 2)).astype("float32")
    tf_qnets.quantize_model(model, w_bits=2, a_bits=2, calibration_data=data, verbose=0)
    for new, old in zip(model.get_weights(), before):
        np.testing.assert_array_equal(new, old)


def test_batch_norm_before_any_quantized_layer_keeps_its_statistics():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = keras.layers.BatchNormalization(name="input_bn")(inputs)
    x = keras.layers.Dense(5, activation="relu", name="first")(x)
    x = keras.layers.Dense(4, name="middle")(x)
    x = keras.layers.BatchNormalization(name="middle_bn")(x)
    outputs = keras.layers.Dense(2, name="last")(keras.layers.ReLU()(x))
    model = keras.Model(inputs, outputs)
    model.get_layer("input_bn").moving_mean.assign(np.full(6, 7.0, "float32"))
    data = np.random.default_rng(2).normal(size=(64, 6)).astype("float32")
    qat = tf_qnets.quantize_model(model, w_bits=2, a_bits=2, calibration_data=data, verbose=0)
    np.testing.assert_array_equal(qat.get_layer("input_bn").moving_mean.numpy(), np.full(6, 7.0))
    assert not np.allclose(qat.get_layer("middle_bn").moving_mean.numpy(),
                           model.get_layer("middle_bn").moving_mean.numpy())


def test_re_estimation_brings_the_hard_model_back_to_the_float_models_outputs():
    """With stale statistics the quantized network's logits are far off; re-estimated, close."""
    data = np.random.default_rng(3).normal(size=(128, 8, 8, 2)).astype("float32")
    model = conv_bn_model()
    # make the float model's statistics the true ones, so that it is a sensible reference
    for name in ("bn_a", "bn_b"):
        layer = model.get_layer(name)
        inputs = keras.Model(model.inputs, layer.input).predict(data, verbose=0)
        channels = inputs.reshape(-1, inputs.shape[-1])
        layer.moving_mean.assign(channels.mean(axis=0))
        layer.moving_variance.assign(channels.var(axis=0))
    reference = model.predict(data, verbose=0)
    with_data = tf_qnets.quantize_model(model, w_bits=2, calibration_data=data, first_last="low_bit",
                                        verbose=0).predict(data, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        without = tf_qnets.quantize_model(model, w_bits=2, first_last="low_bit",
                                          verbose=0).predict(data, verbose=0)
    error_with = np.mean((with_data - reference) ** 2)
    error_without = np.mean((without - reference) ** 2)
    assert error_with < 0.5 * error_without


def test_weight_only_without_calibration_data_warns_and_names_the_fix():
    model = conv_bn_model()
    with pytest.warns(UserWarning, match="calibration_data") as caught:
        tf_qnets.quantize_model(model, w_bits=2, verbose=0)
    assert "bn_b" in str(caught[0].message)   # conv_a stays float (first_last="float")


def test_no_warning_without_batch_norm_or_with_calibration_data():
    keras.utils.set_random_seed(0)
    plain = keras.Sequential([keras.layers.Dense(4, activation="relu", input_shape=(3,)),
                              keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    data = np.random.default_rng(0).normal(size=(16, 8, 8, 2)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tf_qnets.quantize_model(plain, w_bits=2, first_last="low_bit", verbose=0)
        tf_qnets.quantize_model(conv_bn_model(), w_bits=2, calibration_data=data, verbose=0)


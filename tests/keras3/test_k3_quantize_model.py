"""quantize_model for Keras 3: the plan, the copy, the initialisation, fit and evaluate."""

import keras
import numpy as np
import pytest
from keras import ops

from conftest import build_cnn, build_residual, classification_data
from tf_qnets.core.init_math import (activation_thresholds, initial_scales, weight_thresholds)
from tf_qnets.keras3 import QNetsWrapper, TemperatureScheduler, quantize_model, set_temperature
from tf_qnets.keras3.input_quantizer import InputQuantizer


def _numpy(value):
    return ops.convert_to_numpy(value)


@pytest.fixture(scope="module")
def cnn_data():
    return classification_data((8, 8, 2), 4, samples=64)


def _quantized_layers(qat):
    return {layer.name: (layer.weight_quantizer is not None, layer.output_quantizer is not None)
            for layer in qat.layers if isinstance(layer, QNetsWrapper)}


def test_sequential_plan_first_and_last_kernels_float_activations_after_relus(cnn_data):
    model = build_cnn()
    qat = quantize_model(model, 3, 2, calibration_data=cnn_data[0], verbose=0)
    assert isinstance(qat, keras.Sequential)
    assert _quantized_layers(qat) == {
        "conv_first": (False, True),      # float kernel (first), fused relu quantized
        "conv_mid": (True, False),
        "pool": (False, True),            # relu_mid's staircase, after the max pooling
        "dwconv": (True, False),
        "relu_dw": (False, True),
        "dense_mid": (True, True),
    }                                     # dense_last: float kernel, model output


def test_the_users_model_is_not_modified_or_shared(cnn_data):
    model = build_cnn()
    weights = [w.copy() for w in model.get_weights()]
    qat = quantize_model(model, 3, 2, calibration_data=cnn_data[0], verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    own = {id(v) for v in model.weights}
    assert not any(id(v) in own for v in qat.weights)
    assert not any(isinstance(layer, QNetsWrapper) for layer in model.layers)


@pytest.mark.parametrize("thresholds", ["auto", "kmeans", "uniform"])
def test_weight_quantizers_start_from_core_init_math_on_the_kernel(thresholds):
    model = build_cnn()
    qat = quantize_model(model, 3, None, thresholds=thresholds, verbose=0)
    for name in ("conv_mid", "dwconv", "dense_mid"):
        quantizer = qat.get_layer(name).weight_quantizer
        kernel = _numpy(model.get_layer(name).kernel).astype(np.float64)
        alpha, beta = initial_scales(kernel, quantizer.levels, thresholds)
        np.testing.assert_allclose(_numpy(quantizer.alpha), alpha, rtol=1e-6)
        np.testing.assert_allclose(_numpy(quantizer.beta), beta, rtol=1e-6)
        np.testing.assert_allclose(_numpy(quantizer.thresholds),
                                   weight_thresholds(beta * kernel, quantizer.levels, thresholds),
                                   rtol=1e-5, atol=1e-6)


def test_first_activation_quantizer_is_calibrated_on_the_float_activations(cnn_data):
    """conv_first keeps a float kernel, so its activations are the float model's on the
    input as the model rounds it (its InputQuantizer)."""
    model = build_cnn()
    qat = quantize_model(model, 3, 2, calibration_data=cnn_data[0], verbose=0)
    quantizer = qat.get_layer("conv_first").output_quantizer
    rounded = qat.get_layer(qat.layers[0].name)(cnn_data[0])
    assert isinstance(qat.layers[0], InputQuantizer)
    assert not np.allclose(_numpy(rounded), cnn_data[0])
    sample = _numpy(model.get_layer("conv_first")(rounded)).astype(np.float64).ravel()
    alpha, beta = initial_scales(sample, quantizer.levels, "uniform")        # "auto" -> uniform
    np.testing.assert_allclose(_numpy(quantizer.alpha), alpha, rtol=1e-5)
    np.testing.assert_allclose(_numpy(quantizer.thresholds),
                               activation_thresholds(beta * sample, quantizer.levels, "uniform"),
                               rtol=1e-6)


def test_batch_norm_after_quantized_layers_gets_the_quantized_statistics(cnn_data):
    model = build_cnn()
    qat = quantize_model(model, 2, 2, calibration_data=cnn_data[0], verbose=0)
    probe = keras.Model(qat.inputs[0], qat.get_layer("bn_mid").input)
    inputs = _numpy(probe(cnn_data[0], training=False)).astype(np.float64)
    bn = qat.get_layer("bn_mid")
    np.testing.assert_allclose(_numpy(bn.moving_mean), inputs.mean(axis=(0, 1, 2)), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(_numpy(bn.moving_variance), inputs.var(axis=(0, 1, 2)), rtol=1e-4,
                               atol=1e-5)


def _on_levels(values, alpha, levels):
    codes = values / alpha
    return np.allclose(codes, np.round(codes), atol=1e-3) and set(
        np.round(codes).astype(int).ravel()) <= set(levels)


def test_residual_model_trains_with_jit_and_evaluates_on_the_levels():
    model = build_residual()
    x, y = classification_data((16, 3), 3, samples=64)
    qat = quantize_model(model, 2, 3, calibration_data=x, verbose=0)
    assert isinstance(qat.get_layer("add"), keras.layers.Add)
    # the concatenation of two staircases at different scales gets the int8 range the file
    # stores it at
    assert set(_quantized_layers(qat)) == {"stem_relu", "block_conv1", "block_conv2", "block_relu",
                                           "side_conv", "concat", "head"}
    assert _quantized_layers(qat)["concat"] == (False, True)
    qat.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", jit_compile=True)
    history = qat.fit(x, y, epochs=2, batch_size=32, verbose=0,
                      callbacks=[TemperatureScheduler(base=20)])
    assert np.all(np.isfinite(history.history["loss"]))
    # Inference: every quantized kernel and activation is alpha times a level.
    for name in ("block_conv1", "side_conv"):
        layer = qat.get_layer(name)
        kernel = _numpy(layer.weight_quantizer(layer.layer.kernel, training=False))
        assert _on_levels(kernel, float(_numpy(layer.weight_quantizer.alpha)), (-1, 0, 1))
        activations = _numpy(keras.Model(qat.inputs[0], layer.output).predict(x, verbose=0))
        assert _on_levels(activations, float(_numpy(layer.output_quantizer.alpha)), range(8))


def test_from_the_hard_forward_temperature_training_computes_what_evaluate_computes():
    """No BatchNormalization or dropout: with T = 100 the training forward of every quantizer
    is the hard staircase, so the training-mode output equals the inference output."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(8, activation="relu"), keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    qat = quantize_model(model, 2, 2, calibration_data=x, verbose=0)
    set_temperature(qat, weights=100.0, activations=100.0)
    np.testing.assert_array_equal(_numpy(qat(x, training=True)), _numpy(qat(x, training=False)))
    set_temperature(qat, weights=30.0, activations=30.0)
    assert not np.array_equal(_numpy(qat(x, training=True)), _numpy(qat(x, training=False)))


def test_per_layer_and_exclude_are_honoured():
    model = build_cnn()
    qat = quantize_model(model, 3, None, per_layer={"conv_mid": {"w_bits": 1}, "dwconv": None},
                         exclude=["dense_mid"], verbose=0)
    assert _quantized_layers(qat) == {"conv_mid": (True, False)}
    assert qat.get_layer("conv_mid").weight_quantizer.levels.levels == (-1, 1)
    assert qat.get_layer("conv_mid").weight_quantizer.gradient == "wide"


def test_subclassed_models_are_refused_with_the_fix():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(TypeError, match="subclassed.*keras.Model\\(inputs, outputs\\)"):
        quantize_model(net)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"a_bits": 2}, ValueError, "`calibration_data` is required"),
    ({"first_last": "middle"}, ValueError, "`first_last`"),
    ({"exclude": ["conv_midd"]}, ValueError, "Did you mean \\['conv_mid'"),
    ({"w_bits": 9}, ValueError, "`w_bits`"),
    ({"calibration_data": np.zeros((4, 5, 5, 2), "float32"), "a_bits": 2}, ValueError,
     "expects inputs of shape"),
])
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        quantize_model(build_cnn(), verbose=0, **kwargs)


def test_unbuilt_and_non_finite_models_are_refused():
    with pytest.raises(ValueError, match="not built"):
        quantize_model(keras.Sequential([keras.layers.Dense(2), keras.layers.Dense(2)]))
    model = build_cnn()
    kernel = _numpy(model.get_layer("conv_mid").kernel)
    kernel[0, 0, 0, 0] = np.nan
    model.get_layer("conv_mid").kernel.assign(kernel)
    with pytest.raises(ValueError, match="Layer 'conv_mid'.*exclude=\\['conv_mid'\\]"):
        quantize_model(model, verbose=0)


def test_mixed_float16_trains_and_evaluates():
    """float16 activations and kernels, 4-bit activations (the windowed soft form)."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([
            keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
        x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
        y = (x[:, 0] > 0).astype("int32")
        qat = quantize_model(model, 3, 4, calibration_data=x, verbose=0)
        # XLA under JAX; TensorFlow's XLA compile of the float16 window branches alone took
        # 30 s, and jit_compile=True under TensorFlow is covered by the residual test above
        qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    jit_compile=keras.backend.backend() == "jax")
        history = qat.fit(x, y, epochs=1, batch_size=16, verbose=0,
                          callbacks=[TemperatureScheduler(base=10)])
        assert np.isfinite(history.history["loss"][0])
        assert np.isfinite(qat.evaluate(x, y, verbose=0))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_a_backend_other_than_tensorflow_or_jax_is_refused_naming_the_supported_ones(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(ValueError, match=r"supports the tensorflow and jax backends.*'torch'"):
        quantize_model(build_cnn(), w_bits=3, verbose=0)

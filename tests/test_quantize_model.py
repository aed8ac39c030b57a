"""quantize_model on a small Sequential and a small residual Functional model.

Which layers get wrapped, the first/last-layer policy, per-layer overrides, custom level
sets, that the user's model is left untouched, and that inference outputs of quantized
activations lie exactly on alpha * levels.
"""

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras
from tf_qnets.keras2.int8 import Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.keras2.quantizer import QNetsQuantizer


def _plan(qat):
    """{inner layer name: {"weights": quantizer, "output": quantizer}} for every wrapped layer."""
    found = {}
    for wrapper, role, _, quantizer, _ in tf_qnets.quantizer_states(qat):
        found.setdefault(wrapper.layer.name, {})[role] = quantizer
    return found


def _levels(quantizer):
    return quantizer.levels.levels


@pytest.fixture(scope="module")
def float_sequential():
    from conftest import build_sequential
    return build_sequential()


@pytest.fixture(scope="module")
def float_residual():
    from conftest import build_residual
    return build_residual()


@pytest.fixture(scope="module")
def calibration_images():
    return np.random.default_rng(0).normal(size=(32, 8, 8, 2)).astype("float32")


@pytest.fixture(scope="module")
def calibration_signals():
    return np.random.default_rng(1).normal(size=(32, 16, 3)).astype("float32")


@pytest.fixture(scope="module")
def w3a2_sequential(float_sequential, calibration_images):
    return tf_qnets.quantize_model(float_sequential, w_bits=3, a_bits=2,
                                   calibration_data=calibration_images, verbose=0)


@pytest.fixture(scope="module")
def w3a2_residual(float_residual, calibration_signals):
    return tf_qnets.quantize_model(float_residual, w_bits=3, a_bits=2,
                                   calibration_data=calibration_signals, verbose=0)


# --- which layers are wrapped ----------------------------------------------------------------

def test_sequential_middle_kernels_are_quantized_first_and_last_stay_float(w3a2_sequential):
    plan = _plan(w3a2_sequential)
    for name in ("conv_mid", "dwconv", "dense_mid"):
        assert _levels(plan[name]["weights"]) == (-4, -2, -1, 0, 1, 2, 4)
    assert "weights" not in plan.get("conv_first", {})
    assert "dense_last" not in plan


def test_sequential_activations_are_quantized_after_relus_and_fused_relus(w3a2_sequential):
    plan = _plan(w3a2_sequential)
    # relu_mid is read only by the max pooling: its staircase comes after the pooling
    # (max-pooling the staircase's values = the staircase of the max-pooled values)
    for name in ("conv_first", "pool", "relu_dw", "dense_mid"):
        assert _levels(plan[name]["output"]) == (0, 1, 2, 3), name
    assert "relu_mid" not in plan
    # conv_mid feeds BatchNormalization (no activation of its own): its output stays float
    assert "output" not in plan["conv_mid"]


def test_weightless_and_batchnorm_layers_are_not_wrapped(w3a2_sequential, w3a2_residual):
    for qat in (w3a2_sequential, w3a2_residual):
        for layer in qat.layers:
            if type(layer).__name__ in ("FrozenStatisticsBatchNormalization", "MaxPooling2D", "MaxPooling1D",
                                        "Flatten", "Add",
                                        "GlobalAveragePooling1D", "InputLayer", "QuantizeLayer"):
                continue
            if not isinstance(layer, tf_qnets.QNetsWrapper):
                # relu_mid: quantized after the max pooling that is its only reader
                assert layer.name in ("conv_first", "dense_last", "stem", "head_out",
                                      "relu_mid"), layer.name
    kinds = {type(layer).__name__ for layer in w3a2_residual.layers}
    assert {"Add", "FrozenStatisticsBatchNormalization", "GlobalAveragePooling1D"} <= kinds
    # the concatenation of two int8 tensors at different scales: the file requantizes it to
    # an int8 tensor of its own, and the Keras model rounds it the same way
    concat = w3a2_residual.get_layer("quant_concat")
    assert isinstance(concat.quantize_config.get_output_quantizers(concat.layer)[0],
                      tf_qnets.Int8OutputQuantizer)


def test_residual_model_wraps_conv1d_dense_and_relus(w3a2_residual):
    plan = _plan(w3a2_residual)
    assert set(plan) == {"stem_relu", "block_conv1", "block_conv2", "block_bn", "block_relu",
                         "concat", "head_hidden"}
    # block_bn's output feeds the residual Add and the concatenation mixes two scales: the
    # integer file stores both in int8, so training rounds them to int8 too; stem_bn is folded
    # into stem and its ReLU fused, so it stays float
    for name in ("block_bn", "concat"):
        assert set(plan[name]) == {"output"}
        assert isinstance(plan[name]["output"], Int8OutputQuantizer)
    for name in ("block_conv1", "block_conv2", "head_hidden"):
        assert _levels(plan[name]["weights"]) == (-4, -2, -1, 0, 1, 2, 4)
    for name in ("stem_relu", "block_conv1", "block_relu", "head_hidden"):
        assert _levels(plan[name]["output"]) == (0, 1, 2, 3)


def test_low_bit_quantizers_are_qnets_quantizers_and_stored_tensors_int8(w3a2_residual):
    assert tf_qnets.count_quantizers(w3a2_residual) == 7
    kinds = {(wrapper.layer.name, type(q).__name__)
             for wrapper, _, _, q, _ in tf_qnets.quantizer_states(w3a2_residual)
             if not isinstance(q, QNetsQuantizer)}
    assert kinds == {("block_bn", "Int8OutputQuantizer"), ("concat", "Int8OutputQuantizer")}
    assert tf_qnets.is_quantized_model(w3a2_residual)


def test_the_quantized_model_keeps_inputs_outputs_and_layer_count(float_residual, w3a2_residual):
    # one layer more: the model input's int8 rounding (tf_qnets.keras2.input_quantizer)
    assert len(w3a2_residual.layers) == len(float_residual.layers) + 1
    assert [type(layer).__name__ for layer in w3a2_residual.layers[:2]] == [
        "InputLayer", "QuantizeLayer"]
    assert w3a2_residual.input_shape == float_residual.input_shape
    assert w3a2_residual.output_shape == float_residual.output_shape


def test_weight_only_quantization_needs_no_calibration(float_residual):
    qat = tf_qnets.quantize_model(float_residual, w_bits=2, verbose=0)
    plan = _plan(qat)
    assert set(plan) == {"block_conv1", "block_conv2", "head_hidden"}
    assert all(set(roles) == {"weights"} for roles in plan.values())


# --- first / last policy -------------------------------------------------------------------

def test_first_last_int8_simulates_edges_with_8_bit_quantizers(float_residual, calibration_signals):
    qat = tf_qnets.quantize_model(float_residual, w_bits=3, a_bits=2, first_last="int8",
                                  calibration_data=calibration_signals, verbose=0)
    plan = _plan(qat)
    assert isinstance(plan["stem"]["weights"], Int8WeightQuantizer)
    assert isinstance(plan["head_out"]["weights"], Int8WeightQuantizer)
    assert isinstance(plan["head_out"]["output"], Int8OutputQuantizer)
    assert _levels(plan["block_conv1"]["weights"]) == (-4, -2, -1, 0, 1, 2, 4)
    assert tf_qnets.count_quantizers(qat) == 7  # the int8 ones are not sum-of-sigmoid quantizers


def test_first_last_low_bit_quantizes_edges_like_the_rest(float_sequential):
    plan = _plan(tf_qnets.quantize_model(float_sequential, w_bits=2, first_last="low_bit",
                                         verbose=0))
    assert _levels(plan["conv_first"]["weights"]) == (-1, 0, 1)
    assert _levels(plan["dense_last"]["weights"]) == (-1, 0, 1)


def test_model_outputs_are_never_activation_quantized():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, activation="relu", name="only")(
        keras.layers.Dense(5, activation="relu", name="hidden")(
            keras.layers.Dense(4, name="first")(inputs)))
    model = keras.Model(inputs, outputs)
    qat = tf_qnets.quantize_model(model, w_bits=None, a_bits=2, first_last="low_bit",
                                  calibration_data=np.ones((8, 4), "float32"), verbose=0)
    plan = _plan(qat)
    assert "output" in plan["hidden"] and "only" not in plan


# --- per-layer settings ----------------------------------------------------------------------

def test_per_layer_overrides_bits_and_defaults_binary_to_the_wide_gradient(float_residual):
    qat = tf_qnets.quantize_model(
        float_residual, w_bits=3,
        per_layer={"block_conv1": {"w_bits": 1}, "head_hidden": {"w_bits": 4}}, verbose=0)
    plan = _plan(qat)
    assert _levels(plan["block_conv1"]["weights"]) == (-1, 1)
    assert plan["block_conv1"]["weights"].gradient == "wide"
    assert _levels(plan["head_hidden"]["weights"]) == tuple(range(-7, 8))
    assert plan["head_hidden"]["weights"].gradient == "smooth"
    assert _levels(plan["block_conv2"]["weights"]) == (-4, -2, -1, 0, 1, 2, 4)


def test_activation_gradient_applies_to_activation_quantizers_only_and_defaults_to_smooth():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(5, activation="relu", name="first")(inputs)
    x = keras.layers.Dense(5, activation="relu", name="second")(x)
    x = keras.layers.Dense(5, activation="relu", name="third")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="last")(x))
    data = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    qat = tf_qnets.quantize_model(
        model, w_bits=3, a_bits=2, first_last="low_bit", calibration_data=data, verbose=0,
        activation_gradient="exact", per_layer={"third": {"activation_gradient": "smooth"}})
    plan = _plan(qat)
    assert [plan[name]["output"].gradient for name in ("first", "second", "third")] == [
        "exact", "exact", "smooth"]
    assert {plan[name]["weights"].gradient for name in plan} == {"smooth"}
    default = _plan(tf_qnets.quantize_model(model, w_bits=3, a_bits=2, calibration_data=data,
                                            verbose=0))
    assert {default[name]["output"].gradient for name in default if "output" in default[name]} == {
        "smooth"}
    assert {default[name]["weights"].gradient for name in default if "weights" in default[name]} == {
        "smooth"}
    with pytest.raises(ValueError, match="`activation_gradient` must be one of"):
        tf_qnets.quantize_model(model, w_bits=3, a_bits=2, calibration_data=data, verbose=0,
                                activation_gradient="ste")
    with pytest.raises(ValueError, match=r"`per_layer\['second'\]\['activation_gradient'\]`"):
        tf_qnets.quantize_model(model, w_bits=3, a_bits=2, calibration_data=data, verbose=0,
                                per_layer={"second": {"activation_gradient": "steep"}})


def test_per_layer_none_and_exclude_keep_layers_float(float_residual):
    qat = tf_qnets.quantize_model(float_residual, w_bits=3, per_layer={"block_conv2": None},
                                  exclude=["head_hidden"], verbose=0)
    assert set(_plan(qat)) == {"block_conv1"}
    assert not isinstance(qat.get_layer("block_conv2"), tf_qnets.QNetsWrapper)


def test_per_layer_w_bits_on_an_edge_layer_quantizes_it(float_residual):
    plan = _plan(tf_qnets.quantize_model(float_residual, w_bits=3,
                                         per_layer={"stem": {"w_bits": 2}}, verbose=0))
    assert _levels(plan["stem"]["weights"]) == (-1, 0, 1)


def test_custom_level_lists_for_weights_and_activations(float_sequential, calibration_images):
    qat = tf_qnets.quantize_model(float_sequential, w_bits=[-2, 0, 2], a_bits=(0, 1, 3),
                                  calibration_data=calibration_images, verbose=0)
    plan = _plan(qat)
    assert _levels(plan["conv_mid"]["weights"]) == (-2, 0, 2)
    assert _levels(plan["pool"]["output"]) == (0, 1, 3)        # relu_mid's, after the pooling


def test_train_thresholds_makes_thresholds_trainable(float_sequential):
    qat = tf_qnets.quantize_model(float_sequential, w_bits=3, train_thresholds=True, verbose=0)
    trainable = {v.name for v in qat.trainable_variables}
    assert any("kernel_thresholds" in name for name in trainable)
    default = tf_qnets.quantize_model(float_sequential, w_bits=3, verbose=0)
    assert not any("thresholds" in v.name for v in default.trainable_variables)


def test_signed_activation_levels_after_leaky_relu():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, name="first")(inputs)
    x = keras.layers.LeakyReLU(0.1, name="leaky")(x)
    x = keras.layers.Dense(5, name="middle")(x)
    outputs = keras.layers.Dense(2, name="last")(x)
    qat = tf_qnets.quantize_model(keras.Model(inputs, outputs), w_bits=3, a_bits=2,
                                  calibration_data=np.random.default_rng(0).normal(
                                      size=(16, 4)).astype("float32"), verbose=0)
    assert _levels(_plan(qat)["leaky"]["output"]) == (-1, 0, 1)


# --- the user's model ------------------------------------------------------------------------

def test_the_users_model_is_untouched(make_residual, calibration_signals):
    model = make_residual(seed=5)
    weights = [w.copy() for w in model.get_weights()]
    config = model.get_config()
    layers = list(model.layers)
    before = model.predict(calibration_signals, verbose=0)
    tf_qnets.quantize_model(model, w_bits=3, a_bits=2, calibration_data=calibration_signals,
                            verbose=0)
    assert model.get_config() == config
    assert all(a is b for a, b in zip(model.layers, layers))
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(calibration_signals, verbose=0), before)


def test_unquantized_layers_keep_the_float_weights(float_sequential, w3a2_sequential):
    inner = {getattr(layer, "layer", layer).name: getattr(layer, "layer", layer)
             for layer in w3a2_sequential.layers}
    for name in ("conv_first", "dense_last"):
        float_weights = float_sequential.get_layer(name).get_weights()
        assert len(float_weights) > 0
        for a, b in zip(float_weights, inner[name].get_weights()):
            np.testing.assert_array_equal(a, b)
    # BatchNormalization keeps gamma and beta; its moving statistics are re-estimated
    # on the calibration data (tests/test_batch_norm_reestimation.py).
    float_bn, quantized_bn = float_sequential.get_layer("bn_mid"), inner["bn_mid"]
    np.testing.assert_array_equal(float_bn.gamma.numpy(), quantized_bn.gamma.numpy())
    np.testing.assert_array_equal(float_bn.beta.numpy(), quantized_bn.beta.numpy())
    assert not np.allclose(float_bn.moving_variance.numpy(), quantized_bn.moving_variance.numpy())


def test_quantized_kernels_keep_the_float_values(float_sequential, w3a2_sequential):
    wrapper = w3a2_sequential.get_layer("quant_conv_mid")
    [(kernel_variable, _, _)] = wrapper._weight_vars
    np.testing.assert_array_equal(kernel_variable.numpy(),
                                  float_sequential.get_layer("conv_mid").kernel.numpy())


# --- hard outputs ----------------------------------------------------------------------------

def _assert_on_levels(values, alpha, levels):
    codes = np.asarray(values, np.float64) / alpha
    nearest = np.asarray(levels)[np.argmin(np.abs(codes[..., None] - np.asarray(levels)), axis=-1)]
    np.testing.assert_allclose(codes, nearest, atol=1e-4)


def test_inference_activations_lie_on_alpha_times_levels(w3a2_residual, calibration_signals):
    wrappers = [w for w in w3a2_residual.layers if isinstance(w, tf_qnets.QNetsWrapper)
                and w._output_quantizers and isinstance(w._output_quantizers[0], QNetsQuantizer)]
    probe = keras.Model(w3a2_residual.inputs, [w.output for w in wrappers])
    outputs = probe.predict(calibration_signals, verbose=0)
    seen_levels = set()
    for wrapper, values in zip(wrappers, outputs):
        quantizer = wrapper._output_quantizers[0]
        alpha = float(wrapper._output_quantizer_vars["alpha"].numpy())
        _assert_on_levels(values, alpha, _levels(quantizer))
        seen_levels |= set(np.round(values.ravel() / alpha).astype(int))
    assert len(seen_levels) >= 3  # the calibration really spreads activations over the levels


def test_inference_weights_lie_on_alpha_times_levels(w3a2_sequential):
    wrapper = w3a2_sequential.get_layer("quant_dense_mid")
    [(weight, quantizer, variables)] = wrapper._weight_vars
    hard = quantizer(weight, training=False, weights=variables).numpy()
    _assert_on_levels(hard, float(variables["alpha"].numpy()), _levels(quantizer))


def test_evaluate_uses_the_hard_staircase(w3a2_sequential, calibration_images):
    # predict twice: deterministic (no sigmoid noise); equals a manual hard forward pass
    first = w3a2_sequential.predict(calibration_images, verbose=0)
    second = w3a2_sequential(calibration_images, training=False).numpy()
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)
    soft = w3a2_sequential(calibration_images, training=True).numpy()
    assert not np.allclose(first, soft, atol=1e-3)


def test_the_quantized_model_trains(calibration_signals):
    from conftest import build_residual  # a fresh model: the module's fixtures stay untrained
    qat = tf_qnets.quantize_model(build_residual(seed=2), w_bits=3, a_bits=2,
                                  calibration_data=calibration_signals, verbose=0)
    # Adam moves every variable with a non-zero gradient by about the learning rate, so a
    # small gradient on a large scale (beta ~ 14) is not lost to float32 rounding.
    qat.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    labels = np.arange(len(calibration_signals)) % 3
    before = [v.numpy().copy() for v in qat.trainable_variables]
    history = qat.fit(calibration_signals, labels, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(a, v.numpy()) for a, v in zip(before, qat.trainable_variables)]
    assert all(changed)
    names = {v.name for v in qat.trainable_variables}
    assert any("kernel_alpha" in n for n in names) and any("output_beta" in n for n in names)

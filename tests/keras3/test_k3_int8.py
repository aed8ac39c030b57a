"""``first_last="int8"`` on the Keras 3 path: 8-bit first and last kernel layers."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from conftest import build_cnn, classification_data
from tf_qnets.keras3 import (
    QNetsQuantizer, QNetsWrapper, TemperatureScheduler, count_quantizers, get_temperatures,
    quantize_model, quantizers, set_temperature, summary)
from tf_qnets.keras3.int8 import Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.keras3.tensorboard import QuantizerTensorBoard


def _numpy(value):
    return np.asarray(ops.convert_to_numpy(value), np.float64)


def _int8_kernel(kernel, per_axis=True):
    """Symmetric narrow-range 8-bit: clip(round(w / s), -127, 127) * s, s = max|w| / 127."""
    kernel = np.asarray(kernel, np.float64)
    axes = tuple(range(kernel.ndim - 1)) if per_axis else None
    scale = np.maximum(np.max(np.abs(kernel), axis=axes), 1e-8) / 127.0
    return np.clip(np.round(kernel / scale), -127, 127) * scale


def _quantize(samples=64):
    x, y = classification_data((8, 8, 2), 4, samples=samples)
    qat = quantize_model(build_cnn(), w_bits=3, a_bits=2, first_last="int8",
                         calibration_data=x, verbose=0)
    return qat, x, y


def _last_layer_inputs(qat, x):
    probe = keras.Model(qat.inputs, qat.get_layer("dense_last").input)
    return _numpy(probe.predict(x, batch_size=32, verbose=0))


def test_first_and_last_kernel_layers_get_int8_quantizers_the_others_low_bit():
    qat, _, _ = _quantize()
    weight = {layer.name: layer.weight_quantizer for layer in qat.layers
              if isinstance(layer, QNetsWrapper)}
    assert isinstance(weight["conv_first"], Int8WeightQuantizer) and weight["conv_first"].per_axis
    assert isinstance(weight["dense_last"], Int8WeightQuantizer)
    for name in ("conv_mid", "dwconv", "dense_mid"):
        assert isinstance(weight[name], QNetsQuantizer), name
    assert isinstance(qat.get_layer("dense_last").output_quantizer, Int8OutputQuantizer)
    # count_quantizers counts the sigmoid-sum ones only (as on Keras 2); quantizers() lists all
    low_bit = [q for q in quantizers(qat) if isinstance(q, QNetsQuantizer)]
    assert count_quantizers(qat) == len(low_bit) == len(quantizers(qat)) - 3
    assert count_quantizers(qat, "weights") == 3
    # int8 quantizers have no temperature: the schedule skips them
    assert "dense_last_kernel_quantizer" not in get_temperatures(qat)
    set_temperature(qat, weights=20.0, activations=30.0)
    assert set(get_temperatures(qat).values()) == {20.0, 30.0}


@pytest.mark.parametrize("shape, per_axis", [((3, 3, 2, 5), True), ((6, 4), True),
                                             ((3, 3, 4, 1), False)])
def test_int8_kernel_is_per_channel_symmetric_8bit_rounding(shape, per_axis):
    kernel = np.random.default_rng(1).normal(size=shape).astype("float32")
    kernel[..., 0] *= 0.01                                  # channels of very different ranges
    got = _numpy(Int8WeightQuantizer(per_axis=per_axis)(kernel))
    np.testing.assert_allclose(got, _int8_kernel(kernel, per_axis), rtol=0, atol=1e-6)


def test_int8_last_layer_computes_with_the_int8_kernel():
    qat, x, _ = _quantize()
    wrapper = qat.get_layer("dense_last")
    kernel = _numpy(wrapper.layer.kernel)
    np.testing.assert_allclose(_numpy(wrapper.weight_quantizer(wrapper.layer.kernel)),
                               _int8_kernel(kernel), atol=1e-6)
    inputs = _last_layer_inputs(qat, x)
    wrapper.output_quantizer.bypass = True
    try:
        got = _numpy(wrapper(inputs.astype("float32"), training=False))
    finally:
        wrapper.output_quantizer.bypass = False
    np.testing.assert_allclose(got, inputs @ _int8_kernel(kernel) + _numpy(wrapper.layer.bias),
                               atol=1e-4)


def test_output_range_is_calibrated_and_inference_output_is_on_its_256_value_grid():
    qat, x, _ = _quantize()
    wrapper = qat.get_layer("dense_last")
    activations = (_last_layer_inputs(qat, x) @ _int8_kernel(_numpy(wrapper.layer.kernel))
                   + _numpy(wrapper.layer.bias))
    low, high = _numpy(wrapper.output_quantizer.min_var), _numpy(wrapper.output_quantizer.max_var)
    np.testing.assert_allclose([low, high],
                               [min(activations.min(), 0.0), max(activations.max(), 0.0)],
                               atol=1e-4)
    y = _numpy(qat.predict(x, verbose=0))
    assert len(np.unique(y)) <= 256
    scale = (high - low) / 255.0
    zero_point = np.round(-low / scale)                    # the nudged zero point (0 in range)
    codes = y / scale + zero_point
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-2)
    assert codes.min() > -0.5 and codes.max() < 255.5


def test_fit_runs_and_moves_the_output_range_as_a_moving_average():
    qat, x, y = _quantize(samples=32)
    quantizer = qat.get_layer("dense_last").output_quantizer
    before = _numpy(quantizer.min_var), _numpy(quantizer.max_var)
    kernel_before = _numpy(qat.get_layer("conv_first").layer.kernel)
    qat.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    history = qat.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[TemperatureScheduler()])
    assert all(math.isfinite(loss) for loss in history.history["loss"])
    after = _numpy(quantizer.min_var), _numpy(quantizer.max_var)
    assert after != before                                 # 8 steps of EMA updates
    # 8 steps of decay 0.999 move the range by at most 1 - 0.999**8 of the distance to a batch's
    steps = 8
    assert abs(after[0] - before[0]) < (1 - 0.999 ** steps) * 100 and after[0] <= 0 <= after[1]
    # the int8 kernel's float copy trains (straight-through gradient)
    assert not np.array_equal(kernel_before, _numpy(qat.get_layer("conv_first").layer.kernel))


def test_bypass_returns_the_input_and_training_updates_the_range_once():
    quantizer = Int8OutputQuantizer()
    quantizer.initialize_range(np.array([-1.0, 1.0]))
    x = np.linspace(-3.0, 5.0, 50).astype("float32")
    quantizer.bypass = True
    np.testing.assert_array_equal(_numpy(quantizer(x, training=True)), x)
    assert (_numpy(quantizer.min_var), _numpy(quantizer.max_var)) == (-1.0, 1.0)
    quantizer.bypass = False
    quantizer(x, training=True)
    np.testing.assert_allclose([_numpy(quantizer.min_var), _numpy(quantizer.max_var)],
                               [0.999 * -1.0 + 0.001 * -3.0, 0.999 * 1.0 + 0.001 * 5.0], rtol=1e-6)


def test_range_includes_zero_and_an_empty_range_gives_zeros_not_nan():
    quantizer = Int8OutputQuantizer()
    quantizer.initialize_range(np.array([2.0, 3.0]))
    assert (_numpy(quantizer.min_var), _numpy(quantizer.max_var)) == (0.0, 3.0)
    quantizer.initialize_range(np.zeros(4))
    y = _numpy(quantizer(np.array([-1.0, 0.0, 2.0], "float32"), training=False))
    np.testing.assert_allclose(y, 0.0, atol=1e-7)
    zeros = _numpy(Int8WeightQuantizer()(np.zeros((3, 2), "float32")))
    np.testing.assert_array_equal(zeros, 0.0)


def test_keras_file_round_trip_keeps_predictions_and_ranges(tmp_path):
    qat, x, _ = _quantize(samples=32)
    path = str(tmp_path / "int8.keras")
    qat.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    for name in ("conv_first", "dense_last"):
        assert type(loaded.get_layer(name).weight_quantizer) is Int8WeightQuantizer
    restored = loaded.get_layer("dense_last").output_quantizer
    assert type(restored) is Int8OutputQuantizer
    assert _numpy(restored.max_var) == _numpy(qat.get_layer("dense_last").output_quantizer.max_var)


@pytest.mark.parametrize("cls", [Int8WeightQuantizer, Int8OutputQuantizer])
def test_int8_classes_are_registered_and_configs_round_trip(cls):
    assert keras.saving.get_registered_name(cls) == f"tf_qnets>{cls.__name__}"
    obj = cls(name="q")
    assert cls.from_config(obj.get_config()).get_config() == obj.get_config()


def test_wrapper_refuses_an_int8_quantizer_in_the_wrong_place():
    with pytest.raises(TypeError, match="Int8OutputQuantizer"):
        QNetsWrapper(keras.layers.Dense(3), output_quantizer=Int8WeightQuantizer())


def test_summary_shows_8_bits_for_the_int8_layers():
    qat, _, _ = _quantize(samples=32)
    rows = {row.name: row for row in summary(qat, print_fn=None).rows}
    assert rows["conv_first"].weights == "int8" and rows["conv_first"].weight_bits == 8
    assert rows["dense_last"].weights == rows["dense_last"].output == "int8"
    assert rows["dense_last"].weight_bits == 8 and rows["dense_last"].input_bits == 2
    assert rows["dense_last"].mac_precision == "W8/A2"            # its input: dense_mid's A2
    assert rows["conv_mid"].weight_bits == 3


def test_tensorboard_skips_the_int8_quantizers(tmp_path):
    qat, x, _ = _quantize(samples=32)
    callback = QuantizerTensorBoard(str(tmp_path), data=x[:4])
    callback.set_model(qat)
    callback.on_train_begin()
    try:
        tags = callback.values()
    finally:
        callback.on_train_end()
    assert tags and not any("conv_first/kernel" in tag or "dense_last/" in tag for tag in tags)
    assert "alpha/conv_mid/kernel" in tags


def test_one_jit_compiled_step_applies_exactly_one_moving_average_update():
    # Two Dense layers, both int8 (no low-bit quantizer): the training forward is the
    # inference one, so the batch's range is known before the step.
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="first"),
                              keras.layers.Dense(3, name="last")])
    x, y = classification_data((6,), 3, samples=16)
    qat = quantize_model(model, w_bits=3, first_last="int8", calibration_data=x[:8], verbose=0)
    quantizer = qat.get_layer("last").output_quantizer
    before = np.array([_numpy(quantizer.min_var), _numpy(quantizer.max_var)])
    quantizer.bypass = True
    try:
        z = _numpy(qat.predict(x, verbose=0))
    finally:
        quantizer.bypass = False
    qat.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=True)
    qat.fit(x, y, batch_size=16, epochs=1, verbose=0)
    after = np.array([_numpy(quantizer.min_var), _numpy(quantizer.max_var)])
    expected = 0.999 * before + 0.001 * np.array([min(z.min(), 0.0), max(z.max(), 0.0)])
    np.testing.assert_allclose(after, expected, rtol=1e-5)
    assert not np.allclose(after, before, rtol=0, atol=0)


@pytest.mark.parametrize("pool, padding, rounded", [(2, "valid", True), (2, "same", True),
                                                     (3, "same", False)])
def test_a_transition_pooling_gets_an_int8_output_unless_its_windows_pass_the_border(
        pool, padding, rounded):
    """DenseNet's transition pooling, read by a BN and a Concatenate: the file stores it in
    int8, so Keras rounds the mean too; a ``same`` window past the border (3x3, stride 1) has
    no depthwise form and keeps TFLite's own op, unrounded in Keras."""
    import tf_qnets
    from tf_qnets.keras3.wrapper import QNetsWrapper

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="bn0")(x)
    x = keras.layers.ReLU(name="relu0")(x)
    x = keras.layers.Conv2D(8, 1, use_bias=False, name="transition")(x)
    x = keras.layers.AveragePooling2D(pool, strides=1 if pool == 3 else 2, padding=padding,
                                      name="pool")(x)
    y = keras.layers.BatchNormalization(name="bn1")(x)
    y = keras.layers.ReLU(name="relu1")(y)
    y = keras.layers.Conv2D(4, 3, padding="same", name="grow")(y)
    x = keras.layers.Concatenate(name="concat")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    data = np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(model, w_bits=4, a_bits=4, calibration_data=data,
                                  first_last="int8", verbose=0)
    layer = qat.get_layer("pool")
    if rounded:
        assert isinstance(layer, QNetsWrapper)
        assert isinstance(layer.output_quantizer, Int8OutputQuantizer)
    else:
        assert not isinstance(layer, QNetsWrapper)

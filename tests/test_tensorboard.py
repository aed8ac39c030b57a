"""QuantizerTensorBoard: event files with temperature, alpha, beta and saturation per quantizer.

The event files are read back with tf.data.TFRecordDataset + tf.compat.v1.Event; the
saturation is checked against a brute-force NumPy reference over all thresholds.
"""

import glob
import os

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras, tf
from tf_qnets.tf.staircase import CLAMP
from tf_qnets.keras2.tensorboard import QuantizerTensorBoard, saturation


def _float_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(3, 3, activation="relu", name="conv1")(inputs)    # float (first)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv2")(x)         # W2, A2 output
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(3, name="fc")(x)                             # float (last)
    return keras.Model(inputs, outputs)


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.random((n, 6, 6, 1), dtype=np.float32), rng.integers(0, 3, n)


def _quantized():
    x, _ = _data()
    return tf_qnets.quantize_model(_float_model(), w_bits=2, a_bits=2, calibration_data=x, verbose=0)


def _read_scalars(log_dir):
    """{tag: {step: value}} from every event file under ``log_dir/quantizers``."""
    found = {}
    files = sorted(glob.glob(os.path.join(log_dir, "quantizers", "events.out.tfevents.*")))
    for path in files:
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                found.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return found


def _brute_force_saturation(x, beta, thresholds, temperature):
    z = temperature * (beta * np.asarray(x, np.float64).ravel()[:, None] - np.asarray(thresholds)[None, :])
    return float(np.mean(np.all(np.abs(z) >= CLAMP, axis=1)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two epochs with T = 10 * (epoch + 1), logged every epoch with activation data."""
    log_dir = str(tmp_path_factory.mktemp("logs"))
    x, y = _data()
    qat = _quantized()
    qat.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[
        tf_qnets.TemperatureScheduler(base=10),
        QuantizerTensorBoard(log_dir, data=x[:8]),
    ])
    return qat, x, _read_scalars(log_dir)


def test_logs_four_scalars_per_low_bit_quantizer(trained):
    _, _, scalars = trained
    tensors = ["conv1/output", "conv2/kernel", "conv2/output"]
    expected = {f"{metric}/{tensor}" for metric in ("temperature", "alpha", "beta", "saturation")
                for tensor in tensors}
    assert set(scalars) == expected


def test_logged_temperature_follows_the_schedule(trained):
    _, _, scalars = trained
    for tag in ("temperature/conv1/output", "temperature/conv2/kernel", "temperature/conv2/output"):
        assert scalars[tag] == {0: pytest.approx(10.0), 1: pytest.approx(20.0)}


def test_logged_alpha_and_beta_are_the_final_variables(trained):
    qat, _, scalars = trained
    variables = {(w.layer.name, name): v for w, _, name, _, v in tf_qnets.quantizer_states(qat)}
    kernel_vars = variables[("conv2", "kernel")]
    assert scalars["alpha/conv2/kernel"][1] == pytest.approx(float(kernel_vars["alpha"].numpy()))
    assert scalars["beta/conv2/kernel"][1] == pytest.approx(float(kernel_vars["beta"].numpy()))


def test_weight_saturation_matches_a_brute_force_reference(trained):
    qat, _, scalars = trained
    wrapper = qat.get_layer("quant_conv2")
    kernel, _, variables = wrapper._weight_vars[0]
    expected = _brute_force_saturation(
        kernel.numpy(), float(variables["beta"].numpy()), variables["thresholds"].numpy(), 20.0)
    assert scalars["saturation/conv2/kernel"][1] == pytest.approx(expected, abs=1e-7)


def test_activation_saturation_uses_the_float_conv_output_on_data(trained):
    qat, x, scalars = trained
    conv1 = qat.get_layer("quant_conv1")
    # conv1 is the first layer: float weights, so its quantizer sees relu(conv(x) + b).
    kernel, bias = conv1.layer.kernel.numpy(), conv1.layer.bias.numpy()
    pre = tf.nn.relu(tf.nn.conv2d(x[:8], kernel, strides=1, padding="VALID") + bias).numpy()
    variables = next(v for w, role, _, _, v in tf_qnets.quantizer_states(qat)
                     if w is conv1 and role == "output")
    expected = _brute_force_saturation(
        pre, float(variables["beta"].numpy()), variables["thresholds"].numpy(), 20.0)
    assert scalars["saturation/conv1/output"][1] == pytest.approx(expected, abs=1e-7)


def test_saturation_grows_with_temperature(trained):
    _, _, scalars = trained
    series = scalars["saturation/conv2/kernel"]
    assert 0.0 <= series[0] < series[1] <= 1.0


def test_saturation_function_matches_brute_force_on_random_inputs():
    rng = np.random.default_rng(7)
    for _ in range(20):
        x = rng.normal(size=200)
        thresholds = np.sort(rng.normal(size=rng.integers(1, 8)))
        beta, temperature = rng.uniform(0.5, 3.0), rng.uniform(1.0, 200.0)
        assert saturation(x, beta, rng.permutation(thresholds), temperature) == pytest.approx(
            _brute_force_saturation(x, beta, thresholds, temperature))


def test_integer_update_freq_logs_every_n_optimizer_steps_without_activation_saturation(tmp_path):
    x, y = _data(32)
    qat = _quantized()
    qat.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callbacks = [tf_qnets.TemperatureScheduler(base=5),
                 QuantizerTensorBoard(str(tmp_path), update_freq=2)]
    qat.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=callbacks)
    assert set(_read_scalars(str(tmp_path))["temperature/conv2/kernel"]) == {2, 4}   # 4 batches
    qat.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=callbacks)  # steps continue
    scalars = _read_scalars(str(tmp_path))
    assert set(scalars["temperature/conv2/kernel"]) == {2, 4, 6, 8}
    assert "saturation/conv2/kernel" in scalars
    assert "saturation/conv2/output" not in scalars                       # no `data` given


def test_values_reports_the_current_state_without_training():
    qat = _quantized()
    tf_qnets.set_temperature(qat, weights=7.0, activations=3.0)
    callback = QuantizerTensorBoard("unused")
    callback.set_model(qat)
    callback._targets = callback._collect_targets()
    values = callback.values()
    assert values["temperature/conv2/kernel"] == 7.0
    assert values["temperature/conv2/output"] == 3.0


# --- errors and conventions ---------------------------------------------------------------

@pytest.mark.parametrize("update_freq", ["batch", 0, -3, 1.5, True])
def test_rejects_a_bad_update_freq(update_freq):
    with pytest.raises(ValueError, match="`update_freq` must be 'epoch' or a positive int"):
        QuantizerTensorBoard("logs", update_freq=update_freq)


def test_rejects_a_dataset_as_data():
    with pytest.raises(TypeError, match="not a tf.data.Dataset"):
        QuantizerTensorBoard("logs", data=tf.data.Dataset.range(3))


def test_rejects_a_log_dir_that_is_not_a_path():
    with pytest.raises(TypeError, match="`log_dir` must be a folder path"):
        QuantizerTensorBoard(3)


def test_rejects_data_of_the_wrong_shape(tmp_path):
    callback = QuantizerTensorBoard(str(tmp_path), data=np.zeros((2, 5, 5, 1), np.float32))
    callback.set_model(_quantized())
    with pytest.raises(ValueError, match=r"`data` has shape \(2, 5, 5, 1\)"):
        callback.on_train_begin()


def test_rejects_a_model_without_quantizers(tmp_path):
    callback = QuantizerTensorBoard(str(tmp_path))
    callback.set_model(_float_model())
    with pytest.raises(ValueError, match="no tf_qnets low-bit quantizers"):
        callback.on_train_begin()


def test_config_round_trip():
    callback = QuantizerTensorBoard("logs/run1", update_freq=5, data=np.zeros((1, 2)))
    config = callback.get_config()
    assert config == {"log_dir": "logs/run1", "update_freq": 5}
    assert QuantizerTensorBoard.from_config(config).get_config() == config

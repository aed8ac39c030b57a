"""The quantization gap (tf_qnets.keras2.gap): measured in training calls, shown by the scheduler."""

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras, tf
from tf_qnets.keras2.gap import GAP_SAMPLE_SIZE, gap_sample, gap_variables, record_gap


def test_an_activation_sample_is_the_first_example():
    x = tf.reshape(tf.range(2 * 3 * 4, dtype=tf.float32), (2, 3, 4))
    np.testing.assert_array_equal(gap_sample(x, "activations").numpy(), np.arange(12))


def test_a_kernel_sample_is_the_whole_kernel_when_small():
    w = tf.reshape(tf.range(24, dtype=tf.float32), (2, 3, 4))
    np.testing.assert_array_equal(gap_sample(w, "weights").numpy(), np.arange(24))


def test_a_large_tensor_is_sampled_at_an_even_stride_up_to_the_bound():
    size = 3 * GAP_SAMPLE_SIZE + 5
    w = tf.range(size, dtype=tf.float32)
    sample = gap_sample(w, "weights").numpy()
    assert len(sample) == GAP_SAMPLE_SIZE
    np.testing.assert_array_equal(sample, np.arange(0, 3 * GAP_SAMPLE_SIZE, 3))


def test_the_gap_is_the_mean_distance_in_levels():
    variable = tf.Variable(0.0)
    record_gap(variable, tf.constant([0.5, 1.0, 2.5]), tf.constant([0.0, 1.0, 2.0]), alpha=0.5)
    assert variable.numpy() == pytest.approx((0.5 + 0.0 + 0.5) / 3 / 0.5)
    record_gap(variable, tf.zeros((0,)), tf.zeros((0,)), alpha=0.5)
    assert variable.numpy() == 0.0


def _built(quantizer, shape=(4, 8)):
    layer = keras.layers.Layer(name="holder")
    weights = quantizer.build(tf.TensorShape(shape), "t", layer)
    weights["alpha"].assign(0.5)
    return weights


def _gap_at(temperature, x):
    quantizer = tf_qnets.QNetsQuantizer(levels=(0, 1, 2, 3), role="activations")
    weights = _built(quantizer)
    weights["temperature"].assign(temperature)
    quantizer(x, training=True, weights=weights)
    return float(quantizer.gap.numpy())


def test_the_gap_falls_as_t_rises_and_is_zero_once_the_forward_is_hard():
    x = tf.constant(np.random.default_rng(0).uniform(-1, 4, (4, 8)), tf.float32)
    gaps = [_gap_at(t, x) for t in (1.0, 5.0, 20.0, 100.0, 400.0)]
    assert gaps[0] > gaps[1] > gaps[2] > 0.0, gaps
    assert gaps[3] == 0.0 and gaps[4] == 0.0, gaps


def test_an_inference_call_leaves_the_gap_alone():
    quantizer = tf_qnets.QNetsQuantizer(levels=(0, 1, 2, 3), role="activations")
    weights = _built(quantizer)
    x = tf.constant(np.random.default_rng(1).uniform(-1, 4, (4, 8)), tf.float32)
    quantizer(x, training=True, weights=weights)
    before = float(quantizer.gap.numpy())
    quantizer(x + 1.0, training=False, weights=weights)
    assert before > 0.0 and float(quantizer.gap.numpy()) == before


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import build_sequential

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 2)).astype("float32")
    y = rng.integers(0, 4, 64)
    qat = tf_qnets.quantize_model(build_sequential(), w_bits=3, a_bits=3, calibration_data=x[:32])
    qat.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    history = qat.fit(x, y, batch_size=16, epochs=3, verbose=0,
                      callbacks=[tf_qnets.TemperatureScheduler(base=50.0)])   # T = 50, 100, 150
    return qat, history.history, tmp_path_factory.mktemp("gap")


def test_history_has_the_epoch_gap_positive_while_soft_and_zero_when_hard(trained):
    _, history, _ = trained
    assert history["temperature"] == [50.0, 100.0, 150.0]
    gaps = history["quant_gap"]
    assert gaps[0] > 0.0 and gaps[1] == 0.0 and gaps[2] == 0.0, gaps


def test_every_low_bit_quantizer_measures_a_gap_and_none_is_a_model_weight(trained):
    qat, _, _ = trained
    low_bit = [q for _, _, _, q, _ in tf_qnets.quantizer_states(qat)
               if isinstance(q, tf_qnets.QNetsQuantizer)]
    variables = gap_variables(qat)
    assert len(variables) == len(low_bit) > 0
    weight_ids = {id(v) for v in qat.weights}
    assert not any(id(v) in weight_ids for v in variables)
    assert tf_qnets.quantization_gap(qat) == 0.0   # the last step ran at T = 150


def test_a_saved_model_reloads_with_the_same_weights_and_a_fresh_gap(trained):
    qat, _, tmp = trained
    path = str(tmp / "q.keras")
    qat.save(path)
    restored = tf_qnets.load_model(path, compile=False)
    assert len(restored.weights) == len(qat.weights)
    assert len(gap_variables(restored)) == len(gap_variables(qat))


def _small_dense(seed=0):
    """Dense - Dense - Dense: at WxAy the middle kernel and two outputs are quantized (fewer
    quantizers than build_sequential: a faster first training step)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.layers.Dense(8, activation="relu", input_shape=(6,)),
                             keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(4)])


def test_the_progress_bar_shows_the_gap_after_each_step(capsys):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 6)).astype("float32")
    qat = tf_qnets.quantize_model(_small_dense(), w_bits=2, a_bits=2, calibration_data=x)
    assert tf_qnets.count_quantizers(qat) == 3
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    seen = []

    class Spy(keras.callbacks.Callback):   # runs after the scheduler, like the progress bar
        def on_train_batch_end(self, batch, logs=None):
            seen.append(logs.get("quant_gap"))

    qat.fit(x, rng.integers(0, 4, 32), batch_size=16, epochs=1, verbose=1,
            callbacks=[tf_qnets.TemperatureScheduler(base=10.0), Spy()])
    assert len(seen) == 2 and all(value is not None and value > 0.0 for value in seen), seen
    assert "quant_gap: " in capsys.readouterr().out


def test_show_gap_false_leaves_the_logs_alone():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 6)).astype("float32")
    qat = tf_qnets.quantize_model(_small_dense(), w_bits=2, calibration_data=x)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = qat.fit(x, rng.integers(0, 4, 16), batch_size=16, epochs=1, verbose=0,
                      callbacks=[tf_qnets.TemperatureScheduler(show_gap=False)])
    assert "quant_gap" not in history.history


def test_show_gap_must_be_a_bool():
    with pytest.raises(TypeError, match="show_gap"):
        tf_qnets.TemperatureScheduler(show_gap="yes")

"""TemperatureScheduler: T = base * (epoch + 1) on every quantizer, per-step schedule, caps,
custom schedules, validation, and no retracing while T changes."""

import math

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras, tf


@pytest.fixture(scope="module")
def qat():
    """W2A2 residual model (weights and activation quantizers)."""
    from conftest import build_residual
    data = np.random.default_rng(1).normal(size=(32, 16, 3)).astype("float32")
    return tf_qnets.quantize_model(build_residual(seed=4), w_bits=2, a_bits=2,
                                   calibration_data=data, verbose=0)


def _temperatures(model, role=None):
    # the staircases' temperatures (the int8 quantizers of stored tensors have none)
    return [float(variables["temperature"].numpy())
            for _, _, _, quantizer, variables in tf_qnets.quantizer_states(model)
            if "temperature" in variables and (role is None or quantizer.role == role)]


def _attached(callback, model, steps=None):
    callback.set_model(model)
    callback.set_params({"epochs": 10, "steps": steps, "verbose": 0})
    callback.on_train_begin()
    return callback


# --- the schedule ----------------------------------------------------------------------------

@pytest.mark.parametrize("epoch", [0, 1, 4])
def test_default_schedule_sets_base_times_epoch_plus_one_on_every_quantizer(qat, epoch):
    scheduler = _attached(tf_qnets.TemperatureScheduler(base=7.5), qat)
    scheduler.on_epoch_begin(epoch)
    temperatures = _temperatures(qat)
    assert len(temperatures) == tf_qnets.count_quantizers(qat) == 7
    assert temperatures == [pytest.approx(7.5 * (epoch + 1))] * 7


def test_per_step_schedule_uses_a_fractional_epoch(qat):
    scheduler = _attached(tf_qnets.TemperatureScheduler(base=10, per_step=True), qat, steps=4)
    scheduler.on_epoch_begin(1)
    assert _temperatures(qat)[0] == pytest.approx(20.0)
    scheduler.on_train_batch_begin(2)
    assert _temperatures(qat) == [pytest.approx(10 * (1 + 2 / 4 + 1))] * 7
    scheduler.on_train_batch_begin(3)
    assert _temperatures(qat)[0] == pytest.approx(10 * (1 + 3 / 4 + 1))


def test_per_epoch_schedule_ignores_batches(qat):
    scheduler = _attached(tf_qnets.TemperatureScheduler(base=10), qat, steps=4)
    scheduler.on_epoch_begin(0)
    scheduler.on_train_batch_begin(3)
    assert _temperatures(qat)[0] == pytest.approx(10.0)


def test_cap_bounds_every_temperature(qat):
    scheduler = _attached(tf_qnets.TemperatureScheduler(base=10, cap=25), qat)
    scheduler.on_epoch_begin(5)
    assert _temperatures(qat) == [pytest.approx(25.0)] * 7


def test_weight_cap_bounds_only_weight_temperatures(qat):
    scheduler = _attached(tf_qnets.TemperatureScheduler(base=100, weight_cap=150), qat)
    scheduler.on_epoch_begin(2)
    assert _temperatures(qat, "weights") == [pytest.approx(150.0)] * 3
    assert _temperatures(qat, "activations") == [pytest.approx(300.0)] * 4


def test_default_weight_cap_is_2000_as_in_the_release(qat):
    scheduler = _attached(tf_qnets.TemperatureScheduler(base=1000), qat)
    scheduler.on_epoch_begin(4)
    assert set(_temperatures(qat, "weights")) == {2000.0}
    assert set(_temperatures(qat, "activations")) == {5000.0}


def test_custom_schedule_replaces_the_formula(qat):
    scheduler = _attached(
        tf_qnets.TemperatureScheduler(schedule=lambda epoch: 2.0 ** epoch + 0.5), qat)
    for epoch in (0, 3):
        scheduler.on_epoch_begin(epoch)
        assert _temperatures(qat) == [pytest.approx(2.0 ** epoch + 0.5)] * 7


def test_epoch_end_logs_the_temperature(qat):
    scheduler = _attached(tf_qnets.TemperatureScheduler(base=3), qat)
    scheduler.on_epoch_begin(2)
    logs = {}
    scheduler.on_epoch_end(2, logs)
    assert logs["temperature"] == pytest.approx(9.0)


def test_set_and_get_temperatures(qat):
    tf_qnets.set_temperature(qat, weights=4.0, activations=6.0)
    values = tf_qnets.get_temperatures(qat)
    assert sorted(values.values()) == [4.0] * 3 + [6.0] * 4
    assert all("temperature" in name for name in values)


@pytest.mark.parametrize("epochs,base", [(1, 100.0), (2, 50.0), (4, 25.0), (10, 10.0), (55, 10.0)])
def test_auto_base_ends_at_t_100_for_short_fits_and_is_10_for_long_ones(qat, epochs, base):
    scheduler = tf_qnets.TemperatureScheduler()
    assert scheduler.base == "auto"
    scheduler.set_model(qat)
    scheduler.set_params({"epochs": epochs, "steps": None, "verbose": 0})
    scheduler.on_train_begin()
    assert scheduler.resolved_base == base
    scheduler.on_epoch_begin(epochs - 1)
    assert set(_temperatures(qat, "activations")) == {base * epochs}


def test_auto_base_without_fit_params_is_10_and_survives_the_config():
    scheduler = tf_qnets.TemperatureScheduler()
    assert scheduler.resolved_base == 10.0 and scheduler.temperature_at(2) == 30.0
    config = scheduler.get_config()
    assert config["base"] == "auto"
    assert tf_qnets.TemperatureScheduler.from_config(config).base == "auto"


def test_auto_base_is_used_by_fit():
    # The base comes from fit's epoch count, whatever the model: a small Dense one traces fast.
    keras.utils.set_random_seed(5)
    float_model = keras.Sequential([keras.layers.Dense(8, activation="relu", input_shape=(6,)),
                                    keras.layers.Dense(8, activation="relu"),
                                    keras.layers.Dense(3)])
    data = np.random.default_rng(2).normal(size=(8, 6)).astype("float32")
    model = tf_qnets.quantize_model(float_model, w_bits=2, a_bits=2, calibration_data=data,
                                    verbose=0)
    assert tf_qnets.count_quantizers(model, "weights") == 1
    labels = np.zeros((8,) + tuple(model.output_shape[1:]), "float32")
    model.compile("sgd", "mse")
    history = model.fit(data, labels, epochs=2, batch_size=8, verbose=0,
                        callbacks=[tf_qnets.TemperatureScheduler()])
    assert history.history["temperature"] == [50.0, 100.0]


# --- validation ------------------------------------------------------------------------------

@pytest.mark.parametrize("base", [0, -1.0, math.nan, math.inf])
def test_non_positive_or_non_finite_base_is_rejected(base):
    with pytest.raises(ValueError, match="`base` must be a finite temperature > 0"):
        tf_qnets.TemperatureScheduler(base=base)


@pytest.mark.parametrize("base", ["10", "fast", True, None])
def test_non_numeric_base_is_rejected(base):
    with pytest.raises(TypeError, match="`base` must be a positive number"):
        tf_qnets.TemperatureScheduler(base=base)


def test_invalid_caps_are_rejected():
    with pytest.raises(ValueError, match="`cap`"):
        tf_qnets.TemperatureScheduler(cap=0)
    with pytest.raises(ValueError, match="`weight_cap`"):
        tf_qnets.TemperatureScheduler(weight_cap=-5)


def test_a_schedule_must_be_callable():
    with pytest.raises(TypeError, match="`schedule` must be a callable"):
        tf_qnets.TemperatureScheduler(schedule=[1, 2, 3])


def test_a_schedule_returning_an_invalid_temperature_fails_clearly(qat):
    scheduler = _attached(tf_qnets.TemperatureScheduler(schedule=lambda epoch: -1.0), qat)
    with pytest.raises(ValueError, match=r"schedule\(epoch\)"):
        scheduler.on_epoch_begin(0)


def test_set_temperature_rejects_non_positive_values(qat):
    with pytest.raises(ValueError, match="weights temperature"):
        tf_qnets.set_temperature(qat, weights=0.0)


def test_scheduler_on_a_float_model_fails_at_train_begin():
    model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
    scheduler = tf_qnets.TemperatureScheduler()
    scheduler.set_model(model)
    with pytest.raises(ValueError, match="no tf_qnets quantizers"):
        scheduler.on_train_begin()


# --- no retracing ----------------------------------------------------------------------------

def test_changing_temperature_takes_effect_without_retracing(qat):
    x = np.random.default_rng(2).normal(size=(8, 16, 3)).astype("float32")
    traces = []

    @tf.function
    def soft_forward(x):
        traces.append(1)  # Python side effect: runs once per trace
        return qat(x, training=True)

    tf_qnets.set_temperature(qat, weights=1.0, activations=1.0)
    cold = soft_forward(x).numpy()
    tf_qnets.set_temperature(qat, weights=500.0, activations=500.0)
    hot = soft_forward(x).numpy()
    assert len(traces) == 1
    assert not np.allclose(cold, hot, atol=1e-3)
    np.testing.assert_allclose(hot, qat(x, training=True).numpy(), rtol=1e-4, atol=1e-5)


class _TraceAndTemperatureLog(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.traces, self.temperatures = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.traces.append(self.model.train_function.experimental_get_tracing_count())
        self.temperatures.append(_temperatures(self.model))


def test_fit_does_not_retrace_while_the_temperature_rises(qat):
    x = np.random.default_rng(3).normal(size=(32, 16, 3)).astype("float32")
    y = np.arange(32) % 3
    qat.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    log = _TraceAndTemperatureLog()
    history = qat.fit(x, y, batch_size=16, epochs=4, verbose=0,
                      callbacks=[tf_qnets.TemperatureScheduler(base=5), log])
    assert [t[0] for t in log.temperatures] == [5.0, 10.0, 15.0, 20.0]
    assert history.history["temperature"] == [5.0, 10.0, 15.0, 20.0]
    assert log.traces[0] >= 1
    assert log.traces == [log.traces[0]] * 4
    # a second fit with other temperatures reuses the same traced function
    qat.fit(x, y, batch_size=16, epochs=2, verbose=0,
            callbacks=[tf_qnets.TemperatureScheduler(base=50, per_step=True), log])
    assert log.traces[-1] == log.traces[0]

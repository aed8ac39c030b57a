"""TemperatureScheduler for Keras 3: the schedule, the caps, per-step updates, and no retracing."""

import keras
import numpy as np
import pytest
from keras import ops

from tf_qnets.keras3 import (QNetsQuantizer, QNetsWrapper, TemperatureScheduler, get_temperatures,
                             set_temperature)


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6,)),
        QNetsWrapper(keras.layers.Dense(8, activation="relu", name="d1"),
                     weight_quantizer=QNetsQuantizer((-1, 0, 1), name="wq"),
                     output_quantizer=QNetsQuantizer((0, 1, 2, 3), role="activations",
                                                     gradient="smooth", name="aq")),
        keras.layers.Dense(2, name="out"),
    ])


def _data(samples=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 6)).astype("float32")
    return x, (x[:, :1] > 0).astype("int32")


def _temperatures(model):
    layer = model.layers[0]
    return (float(ops.convert_to_numpy(layer.weight_quantizer.temperature)),
            float(ops.convert_to_numpy(layer.output_quantizer.temperature)))


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(_temperatures(self.model))


def _compiled(model):
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    return model


def test_default_schedule_is_base_times_epoch_plus_one_with_auto_base():
    model = _compiled(_model())
    record = _Record()
    history = model.fit(*_data(), epochs=4, batch_size=16, verbose=0,
                        callbacks=[TemperatureScheduler(), record])
    assert [t for t, _ in record.seen] == [25.0, 50.0, 75.0, 100.0]     # base = 100 / 4
    assert history.history["temperature"] == [25.0, 50.0, 75.0, 100.0]


def test_weight_cap_and_cap():
    model = _compiled(_model())
    record = _Record()
    model.fit(*_data(), epochs=2, batch_size=16, verbose=0,
              callbacks=[TemperatureScheduler(base=1500, cap=2500), record])
    assert record.seen == [(1500.0, 1500.0), (2000.0, 2500.0)]


def test_per_step_updates_reach_the_variables_and_survive_the_epoch_end():
    """Under JAX, fit keeps the variables' values in its own state during an epoch; the
    per-step temperature must be the one the variables hold when the epoch ends."""
    model = _compiled(_model())
    record = _Record()
    model.fit(*_data(32), epochs=2, batch_size=8, verbose=0,
              callbacks=[TemperatureScheduler(base=10, per_step=True), record])
    # last step of epoch e (4 steps): T = 10 * (e + 3/4 + 1)
    assert record.seen == [(17.5, 17.5), (27.5, 27.5)]


def test_changing_the_temperature_does_not_retrace_the_training_step(monkeypatch):
    calls = []
    original = QNetsQuantizer.call

    def counting(self, inputs, training=None):      # Keras reads `training` from the signature
        calls.append((self.name, training))
        return original(self, inputs, training=training)

    monkeypatch.setattr(QNetsQuantizer, "call", counting)
    model = _compiled(_model())
    counts = []

    class Count(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            counts.append(len(calls))

    model.fit(*_data(), epochs=4, batch_size=8, verbose=0,
              callbacks=[TemperatureScheduler(base=10, per_step=True), Count()])
    assert counts[0] > 0 and any(training for _, training in calls)
    assert counts == [counts[0]] * 4


def test_set_and_get_temperatures():
    model = _model()
    set_temperature(model, weights=3.0, activations=5.0)
    assert sorted(get_temperatures(model).values()) == [3.0, 5.0]
    with pytest.raises(ValueError, match="temperature > 0"):
        set_temperature(model, weights=-1.0)


def test_scheduler_refuses_a_model_without_quantizers_and_bad_arguments():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="no tf_qnets quantizers"):
        model.fit(np.zeros((4, 6)), np.zeros((4, 2)), verbose=0,
                  callbacks=[TemperatureScheduler()])
    with pytest.raises(TypeError, match="`base`"):
        TemperatureScheduler(base="fast")
    with pytest.raises(TypeError, match="`schedule`"):
        TemperatureScheduler(schedule=3)

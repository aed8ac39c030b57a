"""The quantization gap on Keras 3: recorded by each training call, shown by the scheduler."""

import keras
import numpy as np
import pytest
from keras import ops

from tf_qnets.core.gap import GAP_SAMPLE_SIZE, gap, sample_indices
from tf_qnets.keras3 import (QNetsQuantizer, QNetsWrapper, TemperatureScheduler,
                             quantization_gap, quantize_model, set_temperature)
from tf_qnets.keras3.gap import gap_sample


def _numpy(value):
    return ops.convert_to_numpy(value)


@pytest.mark.parametrize("shape,role", [((3, 5, 7), "activations"), ((40, 30, 9), "weights"),
                                        ((2, 90, 60), "activations")])
def test_sample_is_the_core_selection(shape, role):
    x = np.arange(np.prod(shape), dtype="float32").reshape(shape)
    flat = (x[:1] if role == "activations" else x).ravel()
    expected = flat[sample_indices(flat.size)]
    np.testing.assert_array_equal(_numpy(gap_sample(ops.convert_to_tensor(x), role)), expected)
    assert expected.size <= GAP_SAMPLE_SIZE


@pytest.mark.parametrize("role,shape", [("weights", (70, 80)), ("activations", (4, 300))])
def test_a_training_call_records_the_reference_gap(role, shape):
    """gap = mean |soft - hard| / alpha over the sample, soft and hard from the quantizer itself."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32") * 2
    levels = (-2, -1, 0, 1, 2) if role == "weights" else (0, 1, 2, 3)
    q = QNetsQuantizer(levels, role=role)
    q.build(shape)
    q.assign(0.7, 1.3, np.asarray(q.levels.uniform_thresholds()) + 0.1)
    q.temperature.assign(4.0)
    soft = _numpy(q(x, training=True))
    hard = _numpy(q(x, training=False))
    pick = sample_indices((x[:1] if role == "activations" else x).size)
    expected = gap(soft[:1].ravel()[pick] if role == "activations" else soft.ravel()[pick],
                   hard[:1].ravel()[pick] if role == "activations" else hard.ravel()[pick], 0.7)
    assert expected > 0.01
    np.testing.assert_allclose(float(_numpy(q.gap)), expected, rtol=1e-5)


def test_gap_falls_with_the_temperature_and_is_zero_with_the_hard_forward():
    x = np.random.default_rng(1).normal(size=(8, 50)).astype("float32")
    q = QNetsQuantizer((0, 1, 2, 3), role="activations")
    q.build(x.shape)
    values = []
    for temperature in (1.0, 5.0, 25.0, 100.0):
        q.temperature.assign(temperature)
        q(x, training=True)
        values.append(float(_numpy(q.gap)))
    assert values[0] > values[1] > values[2] > 0.0
    assert values[3] == 0.0
    q(x, training=False)                              # inference records nothing
    assert float(_numpy(q.gap)) == 0.0


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6,)),
        QNetsWrapper(keras.layers.Dense(8, activation="relu"),
                     weight_quantizer=QNetsQuantizer((-1, 0, 1)),
                     output_quantizer=QNetsQuantizer((0, 1, 2, 3), role="activations",
                                                     gradient="smooth")),
        keras.layers.Dense(2),
    ])


class _BatchLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.gaps = []

    def on_train_batch_end(self, batch, logs=None):
        self.gaps.append(logs.get("quant_gap"))


def test_fit_shows_the_gap_per_step_and_per_epoch_and_it_reaches_zero():
    """Under jit: the gap variables come back from the compiled step (JAX's state) each step."""
    model = _model()
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    batches = _BatchLogs()
    history = model.fit(x, y, epochs=4, batch_size=8, verbose=0,
                        callbacks=[TemperatureScheduler(base=25), batches])   # T = 25 .. 100
    per_epoch = history.history["quant_gap"]
    assert len(per_epoch) == 4 and len(batches.gaps) == 16
    assert per_epoch[0] > per_epoch[2] > 0.0 and per_epoch[3] == 0.0
    np.testing.assert_allclose(per_epoch[0], np.mean(batches.gaps[:4]), rtol=1e-6)
    assert len(set(batches.gaps[:4])) > 1           # each step's own value, not one read
    assert quantization_gap(model) == batches.gaps[-1] == 0.0


def test_show_gap_false_logs_no_gap_and_bad_values_are_named():
    model = _model()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.zeros((8, 6), "float32")
    history = model.fit(x, np.zeros(8, "int32"), epochs=1, verbose=0,
                        callbacks=[TemperatureScheduler(show_gap=False)])
    assert "quant_gap" not in history.history
    with pytest.raises(TypeError, match="`show_gap` must be a bool"):
        TemperatureScheduler(show_gap="yes")


def test_quantize_model_gives_every_low_bit_quantizer_a_gap_and_the_model_a_mean():
    from conftest import build_cnn, classification_data

    x, _ = classification_data((8, 8, 2), 4, samples=16)
    qat = quantize_model(build_cnn(), 3, 3, calibration_data=x, verbose=0)
    assert quantization_gap(qat) == 0.0
    set_temperature(qat, weights=2.0, activations=2.0)
    qat(x, training=True)
    assert quantization_gap(qat) > 0.0

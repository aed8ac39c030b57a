"""The top-level ``tf_qnets`` names on Keras 3 models: the same calls a Keras 2 user writes."""

import keras
import numpy as np
import pytest
from keras import ops

import tf_qnets
from conftest import build_cnn, build_residual, classification_data
from tf_qnets.keras3 import QNetsWrapper


def _quantized(a_bits=3):
    x, y = classification_data((8, 8, 2), 4, samples=48)
    qat = tf_qnets.quantize_model(build_cnn(), 3, a_bits, calibration_data=x, verbose=0)
    return qat, x, y


def _small_quantized():
    """Dense - Dense - Dense at W3A3: the middle layer's kernel and two outputs quantized (a
    third of build_cnn's quantizers, so a third of its compile time for the fit tests)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="dense_first"),
        keras.layers.Dense(8, activation="relu", name="dense_mid"),
        keras.layers.Dense(4, name="dense_last")])
    x, y = classification_data((6,), 4, samples=48)
    qat = tf_qnets.quantize_model(model, 3, 3, calibration_data=x, verbose=0)
    assert tf_qnets.count_quantizers(qat, "weights") == 1
    assert tf_qnets.count_quantizers(qat, "activations") == 2
    return qat, x, y


def _compiled(qat):
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"], jit_compile=True)
    return qat


def test_top_level_scheduler_anneals_a_keras3_model_during_fit():
    qat, x, y = _small_quantized()
    scheduler = tf_qnets.TemperatureScheduler()
    history = _compiled(qat).fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[scheduler])
    # base "auto" = max(10, 100 / 2) = 50: T = 50 in epoch 0, 100 in epoch 1
    assert history.history["temperature"] == [50.0, 100.0]
    assert set(tf_qnets.get_temperatures(qat).values()) == {100.0}
    assert isinstance(scheduler.bound, tf_qnets.keras3.TemperatureScheduler)
    assert scheduler.model is qat


def test_top_level_scheduler_per_step_with_caps():
    qat, x, y = _small_quantized()
    scheduler = tf_qnets.TemperatureScheduler(base=10, per_step=True, cap=12, weight_cap=11)
    _compiled(qat).fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[scheduler])
    # last step: epoch 1 + 2/3 -> T = 10 * (1 + 2/3 + 1) = 26.7, capped at 12 (weights 11)
    values = {name: t for name, t in tf_qnets.get_temperatures(qat).items()}
    assert {t for name, t in values.items() if "kernel" in name} == {11.0}
    assert {t for name, t in values.items() if "output" in name} == {12.0}


def test_top_level_scheduler_refuses_a_model_without_quantizers():
    model = _compiled(build_cnn())
    x, y = classification_data((8, 8, 2), 4, samples=16)
    with pytest.raises(ValueError, match="no tf_qnets quantizers"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[tf_qnets.TemperatureScheduler()])


def test_top_level_functions_dispatch_to_keras3():
    qat, x, _ = _quantized()
    assert tf_qnets.is_quantized_model(qat)
    assert not tf_qnets.is_quantized_model(build_cnn())
    weights = tf_qnets.count_quantizers(qat, "weights")
    activations = tf_qnets.count_quantizers(qat, "activations")
    wrappers = [layer for layer in qat.layers if isinstance(layer, QNetsWrapper)]
    assert weights == sum(w.weight_quantizer is not None for w in wrappers) > 0
    assert activations == sum(w.output_quantizer is not None for w in wrappers) > 0
    assert tf_qnets.count_quantizers(qat) == weights + activations
    with pytest.raises(ValueError, match="`role`"):
        tf_qnets.count_quantizers(qat, "kernels")
    tf_qnets.set_temperature(qat, weights=30.0, activations=40.0)
    temperatures = tf_qnets.get_temperatures(qat)
    assert len(temperatures) == weights + activations
    assert sorted(set(temperatures.values())) == [30.0, 40.0]
    with pytest.raises(ValueError, match="temperature"):
        tf_qnets.set_temperature(qat, activations=0.0)


def test_top_level_load_model_reads_a_keras3_file(tmp_path):
    x, _ = classification_data((16, 3), 3, samples=24)
    qat = tf_qnets.quantize_model(build_residual(), 3, 3, calibration_data=x, verbose=0)
    tf_qnets.set_temperature(qat, weights=20.0, activations=25.0)
    path = tmp_path / "qat.keras"
    qat.save(str(path))
    assert tf_qnets.frontend.keras_major_version_of_file(path) == 3
    loaded = tf_qnets.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    assert tf_qnets.get_temperatures(loaded) == tf_qnets.get_temperatures(qat)


def test_top_level_load_model_is_safe_and_names_bad_paths(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "lambda.keras"
    model.save(str(path))
    with pytest.raises(ValueError, match="never executes code"):
        tf_qnets.load_model(path)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        tf_qnets.load_model(tmp_path / "missing.keras")
    with pytest.raises(TypeError, match="`path`"):
        tf_qnets.load_model(3)


def test_top_level_names_work_on_a_loaded_model_that_keeps_training(tmp_path):
    qat, x, y = _small_quantized()
    path = tmp_path / "qat.keras"
    _compiled(qat).save(str(path))
    loaded = tf_qnets.load_model(path)
    history = loaded.fit(x, y, epochs=1, batch_size=16, verbose=0,
                         callbacks=[tf_qnets.TemperatureScheduler(base=30)])
    assert np.isfinite(history.history["loss"][0])
    assert set(tf_qnets.get_temperatures(loaded).values()) == {30.0}
    kernel = next(layer for layer in loaded.layers
                  if isinstance(layer, QNetsWrapper) and layer.weight_quantizer is not None)
    assert float(ops.convert_to_numpy(kernel.weight_quantizer.temperature)) == 30.0

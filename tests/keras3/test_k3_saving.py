"""Saving a Keras 3 quantized model to ``.keras`` and loading it back."""

import json

import keras
import numpy as np
from keras import ops

from conftest import build_cnn, classification_data
from tf_qnets.keras3 import QNetsWrapper, get_temperatures, quantize_model, set_temperature


def _json(config):
    return json.loads(json.dumps(config))


def test_keras_file_round_trip_keeps_predictions_temperatures_and_configs(tmp_path):
    x, y = classification_data((8, 8, 2), 4, samples=48)
    qat = quantize_model(build_cnn(), 3, 2, calibration_data=x, verbose=0)
    set_temperature(qat, weights=30.0, activations=40.0)
    path = str(tmp_path / "qat.keras")
    qat.save(path)
    loaded = keras.saving.load_model(path)          # registered classes: no custom_objects
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    assert get_temperatures(loaded) == get_temperatures(qat)
    for layer in qat.layers:
        if isinstance(layer, QNetsWrapper):
            again = loaded.get_layer(layer.name)
            assert _json(again.get_config()) == _json(layer.get_config())
            for a, b in zip(layer.weights, again.weights):
                assert a.name == b.name
                np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))


def test_a_loaded_model_keeps_training(tmp_path):
    x, y = classification_data((8, 8, 2), 4, samples=32)
    qat = quantize_model(build_cnn(), 2, None, verbose=0)
    path = str(tmp_path / "qat.keras")
    qat.save(path)
    loaded = keras.saving.load_model(path)
    loaded.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   jit_compile=True)
    set_temperature(loaded, weights=10.0)
    history = loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])

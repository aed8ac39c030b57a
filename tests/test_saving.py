"""Save/load round trips: SavedModel, .keras, .h5 and tf.train.Checkpoint.

A quantized model is compiled, trained one step (so the optimizer has momentum slots),
given distinct temperatures, and saved. Each reload must restore every variable (kernels,
alpha, beta, thresholds, T) and the optimizer state in the right places: the test takes the
same eager SGD step on the original and on the reloaded model and requires identical
results (a weight landing in the wrong variable, or lost momentum, changes them).
"""

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras, tf

LOSS = keras.losses.SparseCategoricalCrossentropy()


def _data():
    rng = np.random.default_rng(11)
    return rng.normal(size=(32, 16, 3)).astype("float32"), (np.arange(32) % 3).astype("int32")


def _quantized(seed):
    from conftest import build_residual
    return tf_qnets.quantize_model(build_residual(seed=seed), w_bits=3, a_bits=2,
                                   calibration_data=_data()[0], verbose=0)


def _compile(model):
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)


def _eager_step(model):
    """One soft-staircase SGD step, run eagerly (no tracing)."""
    x, y = _data()
    tf_qnets.set_temperature(model, weights=7.0, activations=13.0)
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return float(loss)


def _snapshot(model):
    return {
        # in model order: names may differ after a reload, the order must not
        "weights": [(v.shape, v.numpy().copy()) for v in model.weights],
        "iterations": int(model.optimizer.iterations.numpy()),
        "optimizer": [v.numpy().copy() for v in model.optimizer.variables()],
        "quantizers": _quantizer_values(model),
    }


def _quantizer_values(model):
    # every quantizer's variables: alpha, beta, thresholds, temperature of the staircases,
    # the range of the int8 ones
    return {(wrapper.name, role, key): value.numpy().copy()
            for wrapper, role, _, _, variables in tf_qnets.quantizer_states(model)
            for key, value in sorted(variables.items())}


def _assert_same(actual, expected, rtol=0.0, optimizer=True):
    assert [shape for shape, _ in actual["weights"]] == [shape for shape, _ in expected["weights"]]
    for index, ((_, got), (_, want)) in enumerate(zip(actual["weights"], expected["weights"])):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=0, err_msg=f"weight #{index}")
    if optimizer:
        assert actual["iterations"] == expected["iterations"]
        assert len(actual["optimizer"]) == len(expected["optimizer"])
        for got, want in zip(actual["optimizer"], expected["optimizer"]):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=0)
    assert actual["quantizers"].keys() == expected["quantizers"].keys()
    for key, value in expected["quantizers"].items():
        np.testing.assert_allclose(actual["quantizers"][key], value, rtol=rtol, atol=0,
                                   err_msg=str(key))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The original's state before and after one more eager step, and its files."""
    keras.backend.clear_session()
    model = _quantized(seed=21)
    _compile(model)
    x, y = _data()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0,
              callbacks=[tf_qnets.TemperatureScheduler(base=3)])
    tf_qnets.set_temperature(model, weights=4.5, activations=6.5)
    folder = tmp_path_factory.mktemp("saved")
    paths = {
        "savedmodel": str(folder / "qat_savedmodel"),
        "keras": str(folder / "qat.keras"),
        "h5": str(folder / "qat.h5"),
    }
    model.save(paths["savedmodel"])
    model.save(paths["keras"])
    model.save(paths["h5"])
    paths["checkpoint"] = tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(
        str(folder / "ckpt" / "qat"))
    before = _snapshot(model)
    predictions = model.predict(x, verbose=0)
    _eager_step(model)
    return {"paths": paths, "before": before, "after": _snapshot(model),
            "predictions": predictions}


def _check_round_trip(loaded, saved):
    before = _snapshot(loaded)
    # A SavedModel restores the optimizer (iterations, slots) lazily, when the first step
    # creates its variables;
    # the comparison after the step below covers them.
    built = len(before["optimizer"]) > 1
    _assert_same(before, saved["before"], optimizer=built)
    temperatures = {key[:2]: value for key, value in before["quantizers"].items()
                    if key[2] == "temperature"}
    assert sorted(set(float(t) for t in temperatures.values())) == [4.5, 6.5]
    np.testing.assert_allclose(loaded.predict(_data()[0], verbose=0), saved["predictions"],
                               rtol=1e-6, atol=1e-6)
    _eager_step(loaded)
    _assert_same(_snapshot(loaded), saved["after"], rtol=1e-6)


@pytest.mark.parametrize("fmt", ["savedmodel", "keras", "h5"])
def test_round_trip_with_tf_qnets_load_model(saved, fmt):
    loaded = tf_qnets.load_model(saved["paths"][fmt])
    assert tf_qnets.count_quantizers(loaded) == 7
    _check_round_trip(loaded, saved)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_round_trip_with_tf_keras_load_model_in_quantize_scope(saved, fmt):
    with tf_qnets.quantize_scope():
        loaded = keras.models.load_model(saved["paths"][fmt])
    _check_round_trip(loaded, saved)


def test_round_trip_through_a_checkpoint_into_a_fresh_quantized_model(saved):
    fresh = _quantized(seed=99)  # other float weights: every value must come from the file
    _compile(fresh)
    status = tf.train.Checkpoint(model=fresh, optimizer=fresh.optimizer).restore(
        saved["paths"]["checkpoint"])
    status.assert_existing_objects_matched()
    for key, value in saved["before"]["quantizers"].items():
        np.testing.assert_array_equal(_quantizer_values(fresh)[key], value)
    # optimizer slots are created by the first step and filled from the checkpoint
    _eager_step(fresh)
    _assert_same(_snapshot(fresh), saved["after"], rtol=1e-6)


def test_a_reloaded_model_continues_training_with_fit(saved):
    loaded = tf_qnets.load_model(saved["paths"]["keras"])
    iterations = int(loaded.optimizer.iterations.numpy())
    x, y = _data()
    history = loaded.fit(x, y, batch_size=32, epochs=1, verbose=0,
                         callbacks=[tf_qnets.TemperatureScheduler(base=3)])
    assert np.isfinite(history.history["loss"][0])
    assert int(loaded.optimizer.iterations.numpy()) == iterations + 1


def test_the_quantizer_config_survives_serialization():
    quantizer = tf_qnets.QNetsQuantizer((-2, 0, 2), role="weights", gradient="wide",
                                        train_thresholds=True)
    config = keras.utils.serialize_keras_object(quantizer)
    with tf_qnets.quantize_scope():
        restored = keras.utils.deserialize_keras_object(config)
    assert restored == quantizer
    assert restored.levels.levels == (-2, 0, 2) and restored.gradient == "wide"

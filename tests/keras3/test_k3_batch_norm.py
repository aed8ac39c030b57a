"""BatchNormalization on the Keras 3 path: ``quantize_model(batch_norm=...)``, the frozen
layer, and ``recalibrate_batch_norm`` after a ``batch_norm="batch"`` fine-tuning."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from conftest import build_cnn, classification_data
from tf_qnets.core.batch_norm import population_statistics
from tf_qnets.keras3 import (
    FrozenStatisticsBatchNormalization,
    TemperatureScheduler,
    quantize_model,
    recalibrate_batch_norm,
)

SHAPE = (8, 8, 2)


def _np(x):
    return ops.convert_to_numpy(x)


def _bn_inputs(model, name, x):
    """The named layer's input in inference mode, flattened to (elements, channels)."""
    layer = model.get_layer(name)
    values = _np(keras.Model(model.inputs[0], layer.input)(x, training=False))
    return values.reshape(-1, values.shape[-1])


def build_conv_bn(seed=0):
    """Conv2D(relu) - Conv2D - BN - ReLU - GlobalAveragePooling2D - Dense: with the first and
    last layers float, one quantized kernel before the BatchNormalization."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(SHAPE),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_first"),
        keras.layers.Conv2D(6, 3, padding="same", name="conv_mid"),
        keras.layers.BatchNormalization(name="bn_mid"),
        keras.layers.ReLU(name="relu_mid"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(4, name="dense_last"),
    ], name="conv_bn")


def _compile(model, learning_rate=0.05):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)


# --- the layer ----------------------------------------------------------------------------

def _layer_with_statistics(cls):
    layer = cls(name="bn")
    layer.build((None, 3))
    layer.moving_mean.assign(np.array([1.0, -2.0, 0.5], "float32"))
    layer.moving_variance.assign(np.array([4.0, 0.25, 1.0], "float32"))
    layer.gamma.assign(np.array([2.0, 1.0, -1.0], "float32"))
    layer.beta.assign(np.array([0.0, 1.0, 3.0], "float32"))
    return layer


def test_frozen_layer_uses_the_moving_statistics_in_training_too():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(16, 3)).astype("float32")
    frozen = _layer_with_statistics(FrozenStatisticsBatchNormalization)
    expected = (np.array([2.0, 1.0, -1.0]) * (x - np.array([1.0, -2.0, 0.5]))
                / np.sqrt(np.array([4.0, 0.25, 1.0]) + frozen.epsilon) + np.array([0.0, 1.0, 3.0]))
    np.testing.assert_allclose(_np(frozen(x, training=True)), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(frozen(x, training=False)), expected, rtol=1e-5, atol=1e-5)
    # a plain BatchNormalization differs in training (batch statistics): the test can fail
    plain = _layer_with_statistics(keras.layers.BatchNormalization)
    assert np.max(np.abs(_np(plain(x, training=True)) - expected)) > 0.1


def test_frozen_layer_is_registered_and_its_config_round_trips():
    assert (keras.saving.get_registered_name(FrozenStatisticsBatchNormalization)
            == "tf_qnets>FrozenStatisticsBatchNormalization")
    layer = FrozenStatisticsBatchNormalization(axis=1, momentum=0.9, epsilon=1e-2, name="f")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is FrozenStatisticsBatchNormalization
    assert again.get_config() == layer.get_config()


# --- quantize_model(batch_norm=...) -------------------------------------------------------

@pytest.mark.parametrize("mode, cls", [("frozen", FrozenStatisticsBatchNormalization),
                                       ("batch", keras.layers.BatchNormalization)])
def test_batch_norm_mode_picks_the_layer_and_calibration_measures_its_statistics(mode, cls):
    x, _ = classification_data(SHAPE, 4, samples=64)
    float_model = build_cnn()
    qat = quantize_model(float_model, 3, 3, calibration_data=x, batch_norm=mode, verbose=0)
    layer = qat.get_layer("bn_mid")
    assert type(layer) is cls
    assert type(float_model.get_layer("bn_mid")) is keras.layers.BatchNormalization
    inputs = _bn_inputs(qat, "bn_mid", x)
    np.testing.assert_allclose(_np(layer.moving_mean), inputs.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_np(layer.moving_variance), inputs.var(0), rtol=1e-4, atol=1e-6)
    # ... which are not the float model's (the test above can fail)
    assert not np.allclose(_np(float_model.get_layer("bn_mid").moving_mean), inputs.mean(0),
                           atol=1e-3)


def test_fit_with_frozen_batch_norm_trains_gamma_and_beta_but_not_the_statistics():
    x, y = classification_data(SHAPE, 4, samples=64)
    qat = quantize_model(build_conv_bn(), 3, 3, calibration_data=x, verbose=0)   # 3 quantizers
    layer = qat.get_layer("bn_mid")
    before = {v.path: _np(v).copy() for v in layer.weights}
    _compile(qat)
    qat.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[TemperatureScheduler()])
    after = {v.path: _np(v) for v in layer.weights}
    for variable in (layer.moving_mean, layer.moving_variance):
        np.testing.assert_array_equal(after[variable.path], before[variable.path])
    assert not np.array_equal(after[layer.gamma.path], before[layer.gamma.path])
    assert not np.array_equal(after[layer.beta.path], before[layer.beta.path])


@pytest.mark.parametrize("value", ["Frozen", "none", None, True])
def test_a_bad_batch_norm_mode_names_the_argument(value):
    with pytest.raises(ValueError, match=r"`batch_norm` must be one of \('frozen', 'batch'\)"):
        quantize_model(build_cnn(), 3, None, batch_norm=value, verbose=0)


@pytest.mark.parametrize("mode", ["frozen", "batch"])
def test_stale_statistics_without_calibration_data_warn_and_name_the_fix(mode):
    with pytest.warns(UserWarning, match="calibration_data") as caught:
        quantize_model(build_cnn(), 2, None, batch_norm=mode, verbose=0)
    message = next(str(w.message) for w in caught if "calibration_data" in str(w.message))
    assert "bn_mid" in message and ("fit keeps them frozen" in message) == (mode == "frozen")
    x, _ = classification_data(SHAPE, 4, samples=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        quantize_model(build_cnn(), 2, None, calibration_data=x, batch_norm=mode, verbose=0)


def test_keras_file_round_trip_keeps_the_frozen_layer(tmp_path):
    x, y = classification_data(SHAPE, 4, samples=32)
    qat = quantize_model(build_conv_bn(), 3, 3, calibration_data=x, verbose=0)   # 3 quantizers
    path = str(tmp_path / "frozen.keras")
    qat.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.get_layer("bn_mid")
    assert type(layer) is FrozenStatisticsBatchNormalization
    for a, b in zip(qat.get_layer("bn_mid").weights, layer.weights):
        np.testing.assert_array_equal(_np(a), _np(b))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    # and it stays frozen while the loaded model trains
    _compile(loaded)
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(_np(layer.moving_mean), _np(qat.get_layer("bn_mid").moving_mean))


# --- recalibrate_batch_norm ---------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_batch_mode():
    """A W3 model fine-tuned a few steps with batch statistics (``batch_norm="batch"``);
    trained once per module, each test gets a copy of its weights."""
    x, y = classification_data(SHAPE, 4, samples=64, seed=1)
    qat = quantize_model(build_conv_bn(), 3, None, calibration_data=x, batch_norm="batch",
                         verbose=0)
    _compile(qat, learning_rate=0.01)
    qat.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[TemperatureScheduler(base=20)])
    return x, y, [w.copy() for w in qat.get_weights()]


def _rebuilt(trained):
    x, y, weights = trained
    qat = quantize_model(build_conv_bn(), 3, None, calibration_data=x, batch_norm="batch",
                         verbose=0)
    qat.set_weights(weights)
    return qat


def test_recalibration_sets_the_exact_statistics_of_the_hard_network(trained_batch_mode):
    x, y, _ = trained_batch_mode
    qat = _rebuilt(trained_batch_mode)
    layer = qat.get_layer("bn_mid")
    inputs = _bn_inputs(qat, "bn_mid", x)
    # fit moved the moving averages away from the hard network's statistics ...
    assert np.max(np.abs(_np(layer.moving_mean) - inputs.mean(0))) > 1e-2
    assert np.max(np.abs(_np(layer.moving_variance) / inputs.var(0) - 1)) > 0.5
    before = qat.predict(x, verbose=0)
    assert np.ptp(before, axis=0).min() > 1e-3          # a live network, not a constant
    others = [_np(v).copy() for v in qat.weights]
    assert recalibrate_batch_norm(qat, x) == ["bn_mid"]
    # ... and recalibration sets them to those statistics exactly
    np.testing.assert_allclose(_np(layer.moving_mean), inputs.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_np(layer.moving_variance), inputs.var(0), rtol=1e-4, atol=1e-6)
    # the hard network evaluate runs has changed with them
    assert np.max(np.abs(qat.predict(x, verbose=0) - before)) > 0.1
    moving = (id(layer.moving_mean), id(layer.moving_variance))
    for v, old in zip(qat.weights, others):
        if id(v) not in moving:
            np.testing.assert_array_equal(_np(v), old)


def test_max_batches_stops_reading_an_endless_iterable(trained_batch_mode):
    x, _, _ = trained_batch_mode
    qat = _rebuilt(trained_batch_mode)

    def endless():
        while True:
            yield x[:16], None

    recalibrate_batch_norm(qat, endless(), max_batches=1)
    inputs = _bn_inputs(qat, "bn_mid", x[:16])
    np.testing.assert_allclose(_np(qat.get_layer("bn_mid").moving_mean), inputs.mean(0),
                               rtol=1e-4, atol=1e-5)


def test_recalibrating_a_frozen_model_warns():
    x, _ = classification_data(SHAPE, 4, samples=32)
    qat = quantize_model(build_cnn(), 3, 3, calibration_data=x, verbose=0)
    with pytest.warns(UserWarning, match=r"trained with their statistics frozen"):
        assert recalibrate_batch_norm(qat, x) == ["bn_mid"]


def test_a_model_without_batch_norm_warns_and_is_left_alone():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    qat = quantize_model(model, 2, 2, calibration_data=x, verbose=0)
    with pytest.warns(UserWarning, match="no BatchNormalization after a quantized layer"):
        assert recalibrate_batch_norm(qat, x) == []


@pytest.mark.parametrize("call, error, match", [
    (lambda q, x: recalibrate_batch_norm("qat.keras", x), TypeError, "`model` must be a Keras 3"),
    (lambda q, x: recalibrate_batch_norm(build_cnn(), x), ValueError, "has no tf_qnets quantizers"),
    (lambda q, x: recalibrate_batch_norm(q, 3), TypeError, "`data` must be a NumPy array"),
    (lambda q, x: recalibrate_batch_norm(q, x[:, :4]), ValueError, "`data` batches have shape"),
    (lambda q, x: recalibrate_batch_norm(q, x, max_batches=0), ValueError,
     "`max_batches` must be a positive int"),
    (lambda q, x: recalibrate_batch_norm(q, x, max_batches=1.5), ValueError, "`max_batches`"),
    (lambda q, x: recalibrate_batch_norm(q, x, verbose=2), ValueError, "`verbose` must be 0 or 1"),
])
def test_bad_arguments_name_the_argument(call, error, match):
    x, _ = classification_data(SHAPE, 4, samples=32)
    qat = quantize_model(build_cnn(), 3, 3, calibration_data=x, batch_norm="batch", verbose=0)
    with pytest.raises(error, match=match):
        call(qat, x)


# --- the shared arithmetic (tf_qnets.core.batch_norm) -------------------------------------

@pytest.mark.parametrize("axis", [-1, 1, (1, 3)])
def test_population_statistics_match_numpy_over_uneven_batches(axis):
    rng = np.random.default_rng(3)
    x = rng.normal(1e3, 0.01, size=(37, 3, 4, 5))       # a large mean: no cancellation
    batches = [x[:1], x[1:20], x[20:20], x[20:]]
    mean, variance = population_statistics(iter(batches), axis)
    kept = tuple(a % 4 for a in np.atleast_1d(axis))
    moved = np.moveaxis(x, kept, tuple(range(4 - len(kept), 4)))
    flat = moved.reshape(-1, int(np.prod([x.shape[a] for a in kept])))
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(variance, flat.var(0), rtol=1e-9)


def test_population_statistics_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        population_statistics([], -1)

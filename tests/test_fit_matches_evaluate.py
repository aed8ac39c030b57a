"""What ``fit`` trains is what ``evaluate`` measures (issue: no hidden step after training).

By default ``quantize_model`` freezes every BatchNormalization's statistics at the values
measured on the quantized network (tf_qnets.keras2.batch_norm) and, from T = 100 on, trains the
hard staircase in the forward pass (tf_qnets.keras2.quantizer.HARD_FORWARD_TEMPERATURE). At the
schedule's final temperature the training forward and the inference forward are then the
same function of the weights; ``batch_norm="batch"`` (Keras's usual batch statistics) is
the control that shows the check can fail.
"""

import warnings

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras
from tf_qnets.keras2.batch_norm import FrozenStatisticsBatchNormalization


def build_bn_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv_first")(inputs)
    x = keras.layers.BatchNormalization(name="bn_first")(x)
    x = keras.layers.ReLU(name="relu_first")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_mid")(x)
    x = keras.layers.BatchNormalization(name="bn_mid")(x)
    x = keras.layers.ReLU(name="relu_mid")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int32") + (x[:, 0, 0, 0] > 1).astype("int32")
    return x, y


def quantize(batch_norm="frozen", data=None):
    return tf_qnets.quantize_model(build_bn_cnn(), w_bits=3, a_bits=3, calibration_data=data[0][:64],
                                   batch_norm=batch_norm, verbose=0)


def compile_for_fine_tuning(qat):
    qat.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)


def fit_at(qat, data, temperature, epochs):
    qat.fit(*data, batch_size=32, epochs=epochs, verbose=0,
            callbacks=[tf_qnets.TemperatureScheduler(schedule=lambda epoch: temperature)])


def soft_hard_gap(qat, x):
    return np.abs(qat(x, training=True).numpy() - qat(x, training=False).numpy()).max()


@pytest.fixture(scope="module")
def tuned(data):
    """``{"frozen": ..., "batch": ...}``: each quantized and fine-tuned to T = 100 (2 epochs),
    with the moving statistics and gammas it started from; and ``"soft_gap"``: the largest
    difference of the training and the inference forward of the "frozen" model after its
    first epoch, fine-tuned at T = 20 (below the hard-forward temperature) before the two at
    T = 100, with the same compiled training step (compiling it is the slow part)."""
    models = {}
    for mode in ("frozen", "batch"):
        qat = quantize(mode, data)
        start = [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy(),
                  layer.gamma.numpy().copy()) for layer in bn_layers(qat)]
        compile_for_fine_tuning(qat)
        if mode == "frozen":
            fit_at(qat, data, 20.0, epochs=1)
            models["soft_gap"] = soft_hard_gap(qat, data[0])
        fit_at(qat, data, 100.0, epochs=2)
        models[mode] = (qat, start)
    return models


def bn_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_every_batch_norm_is_frozen_by_default_and_the_float_model_keeps_its_own(data):
    float_model = build_bn_cnn()
    qat = tf_qnets.quantize_model(float_model, w_bits=3, a_bits=3, calibration_data=data[0][:64],
                                  verbose=0)
    frozen = bn_layers(qat)
    assert [layer.name for layer in frozen] == ["bn_first", "bn_mid"]
    assert all(type(layer) is FrozenStatisticsBatchNormalization for layer in frozen)
    assert all(layer.gamma.trainable and layer.beta.trainable for layer in frozen)
    assert all(type(layer) is keras.layers.BatchNormalization for layer in bn_layers(float_model))
    kept = quantize("batch", data)
    assert all(type(layer) is keras.layers.BatchNormalization for layer in bn_layers(kept))


@pytest.mark.parametrize("value", ["moving", "", None, 1, ["frozen"]])
def test_batch_norm_argument_names_itself_and_the_choices(value, data):
    with pytest.raises(ValueError, match=r"`batch_norm` must be one of \('frozen', 'batch'\)"):
        tf_qnets.quantize_model(build_bn_cnn(), w_bits=3, a_bits=3, calibration_data=data[0][:64],
                                batch_norm=value, verbose=0)


def test_after_fit_the_training_forward_is_the_evaluated_one(data, tuned):
    qat, start = tuned["frozen"]
    for layer, (mean, variance, gamma) in zip(bn_layers(qat), start):
        np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)
        np.testing.assert_array_equal(layer.moving_variance.numpy(), variance)
        assert not np.allclose(layer.gamma.numpy(), gamma), layer.name   # gamma still trains
    trained = qat(data[0], training=True).numpy()
    evaluated = qat(data[0], training=False).numpy()
    np.testing.assert_allclose(trained, evaluated, rtol=0, atol=1e-5)
    # The same check fails for Keras's batch statistics (the control).
    control, start = tuned["batch"]
    assert not np.array_equal(bn_layers(control)[1].moving_mean.numpy(), start[1][0])
    gap = np.abs(control(data[0], training=True).numpy() - control(data[0], training=False).numpy())
    assert gap.max() > 1e-2


def test_below_the_hard_forward_temperature_training_is_soft(tuned):
    """A fresh "frozen" model after one epoch at T = 20 (the ``tuned`` fixture)."""
    assert tuned["soft_gap"] > 1e-3


def test_recalibrating_frozen_statistics_warns_and_still_runs(data):
    qat = quantize("frozen", data)
    with pytest.warns(UserWarning, match=r"trained with their statistics frozen.*batch_norm='batch'"):
        names = tf_qnets.recalibrate_batch_norm(qat, data[0])
    assert names == ["bn_mid"]
    control = quantize("batch", data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tf_qnets.recalibrate_batch_norm(control, data[0]) == ["bn_mid"]


def test_frozen_layers_survive_saving_and_export_folds_them(data, tuned, tmp_path):
    qat, _ = tuned["frozen"]
    path = str(tmp_path / "qat.keras")
    qat.save(path)
    loaded = tf_qnets.load_model(path)
    assert [type(layer) for layer in bn_layers(loaded)] == [FrozenStatisticsBatchNormalization] * 2
    np.testing.assert_array_equal(loaded(data[0], training=True).numpy(),
                                  qat(data[0], training=True).numpy())
    tflite = str(tmp_path / "qat.tflite")
    tf_qnets.export_tflite(qat, tflite, representative_data=data[0][:32])
    report = tf_qnets.verify_tflite(qat, tflite, data[0])
    assert report.agreement >= 0.9, str(report)

"""``tf_qnets.recalibrate_batch_norm``: after fine-tuning, each BatchNormalization after a
quantized layer gets the exact statistics of its hard (inference-mode) inputs; nothing
else in the model changes."""

import warnings

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras, tf
from tf_qnets.keras2.init import layer_tensor_in

from test_batch_norm_reestimation import batch_norm_output, conv_bn_model

DATA = np.random.default_rng(1).normal(size=(96, 8, 8, 2)).astype("float32")


_TRAINED_WEIGHTS = []


def trained_qat():
    """A W2A2 model fine-tuned a few steps with Keras's batch statistics
    (``batch_norm="batch"``), so that its moving statistics lag behind.

    Trained once per module; later calls rebuild it and load those weights (fit is the slow part).
    """
    qat = tf_qnets.quantize_model(conv_bn_model(), w_bits=2, a_bits=2, calibration_data=DATA,
                                  first_last="low_bit", batch_norm="batch", verbose=0)
    if _TRAINED_WEIGHTS:
        qat.set_weights(_TRAINED_WEIGHTS)
        return qat
    qat.compile(keras.optimizers.Adam(0.05),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    labels = np.random.default_rng(2).integers(0, 3, len(DATA))
    qat.fit(DATA, labels, batch_size=16, epochs=2, verbose=0,
            callbacks=[tf_qnets.TemperatureScheduler(base=20)])
    _TRAINED_WEIGHTS.extend(w.copy() for w in qat.get_weights())
    return qat


def test_each_batch_norm_gets_the_statistics_of_its_hard_inputs():
    qat = trained_qat()
    assert tf_qnets.recalibrate_batch_norm(qat, DATA) == ["bn_a", "bn_b"]
    for name in ("bn_a", "bn_b"):
        layer = qat.get_layer(name)
        probe = keras.Model(qat.inputs, layer_tensor_in(qat, layer))
        inputs = probe.predict(DATA, verbose=0).reshape(-1, layer.moving_mean.shape[0])
        np.testing.assert_allclose(layer.moving_mean.numpy(), inputs.mean(axis=0), rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), inputs.var(axis=0), rtol=1e-3,
                                   atol=1e-6)
        # so in inference mode the layer normalises that data: mean beta per channel
        out = batch_norm_output(qat, name, DATA).reshape(-1, layer.moving_mean.shape[0])
        np.testing.assert_allclose(out.mean(axis=0), layer.beta.numpy(), atol=1e-3)


def test_training_had_moved_the_statistics_away_so_the_test_above_can_fail():
    qat = trained_qat()
    layer = qat.get_layer("bn_b")
    probe = keras.Model(qat.inputs, layer_tensor_in(qat, layer))
    inputs = probe.predict(DATA, verbose=0).reshape(-1, layer.moving_mean.shape[0])
    assert np.max(np.abs(layer.moving_mean.numpy() - inputs.mean(axis=0))) > 1e-2


def test_only_the_moving_statistics_change():
    qat = trained_qat()
    moving = {v.name for v in qat.weights if "moving_" in v.name}
    before = {v.name: v.numpy().copy() for v in qat.weights}
    tf_qnets.recalibrate_batch_norm(qat, tf.data.Dataset.from_tensor_slices(DATA).batch(32))
    changed = {v.name for v in qat.weights if not np.array_equal(v.numpy(), before[v.name])}
    assert changed and changed <= moving


def test_max_batches_limits_the_sample():
    qat = trained_qat()
    dataset = tf.data.Dataset.from_tensor_slices(DATA).batch(32)
    tf_qnets.recalibrate_batch_norm(qat, dataset, max_batches=1)
    layer = qat.get_layer("bn_a")
    first = keras.Model(qat.inputs, layer_tensor_in(qat, layer)).predict(DATA[:32], verbose=0)
    np.testing.assert_allclose(layer.moving_mean.numpy(), first.reshape(-1, 6).mean(axis=0),
                               rtol=1e-4, atol=1e-5)


def test_bad_arguments_say_what_is_allowed():
    qat = trained_qat()
    with pytest.raises(TypeError, match="`model` must be a tf_keras Model"):
        tf_qnets.recalibrate_batch_norm("model.keras", DATA)
    with pytest.raises(ValueError, match="has no tf_qnets quantizers"):
        tf_qnets.recalibrate_batch_norm(conv_bn_model(), DATA)
    with pytest.raises(TypeError, match="`data` must be a tf.data.Dataset"):
        tf_qnets.recalibrate_batch_norm(qat, [1, 2, 3])
    with pytest.raises(ValueError, match="`data` batches have shape"):
        tf_qnets.recalibrate_batch_norm(qat, np.zeros((4, 5, 5, 2), "float32"))
    with pytest.raises(ValueError, match="`max_batches` must be a positive int"):
        tf_qnets.recalibrate_batch_norm(qat, DATA, max_batches=0)


def test_a_model_without_batch_norm_warns_and_is_left_alone():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(8, activation="relu", input_shape=(4,)),
                              keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    qat = tf_qnets.quantize_model(model, w_bits=2, a_bits=2, calibration_data=x, verbose=0)
    before = [w.copy() for w in qat.get_weights()]
    with pytest.warns(UserWarning, match="no BatchNormalization after a quantized layer"):
        assert tf_qnets.recalibrate_batch_norm(qat, x) == []
    for new, old in zip(qat.get_weights(), before):
        np.testing.assert_array_equal(new, old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tf_qnets.recalibrate_batch_norm(trained_qat(), DATA)   # no warning where there is work

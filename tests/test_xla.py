"""XLA: a quantized model trains with jit_compile=True, and XLA and non-XLA forward passes agree."""

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras, tf


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return rng.normal(size=(32, 16, 3)).astype("float32"), np.arange(32) % 3


@pytest.fixture(scope="module")
def qat(data):
    from conftest import build_residual
    return tf_qnets.quantize_model(build_residual(seed=8), w_bits=3, a_bits=3,
                                   calibration_data=data[0], verbose=0)


def test_jit_compiled_fit_trains(qat, data):
    x, y = data
    qat.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy", jit_compile=True)
    history = qat.fit(x, y, batch_size=16, epochs=2, verbose=0,
                      callbacks=[tf_qnets.TemperatureScheduler(base=5)])
    losses = history.history["loss"]
    assert all(np.isfinite(losses))
    assert history.history["temperature"] == [5.0, 10.0]
    assert qat.train_function.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("training", [True, False])
def test_xla_and_non_xla_forward_passes_agree(qat, data, training):
    # T is a variable: one compile of each function serves both temperatures.
    x = data[0]
    plain = tf.function(lambda v: qat(v, training=training))
    compiled = tf.function(lambda v: qat(v, training=training), jit_compile=True)
    for temperature in (2.0, 40.0):
        tf_qnets.set_temperature(qat, weights=temperature, activations=temperature)
        # a training call moves the int8 output ranges (a moving average): both calls start
        # from the same state
        state = qat.get_weights()
        want = plain(x).numpy()
        qat.set_weights(state)
        got = compiled(x).numpy()
        qat.set_weights(state)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"T={temperature}")

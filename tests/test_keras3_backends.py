"""The Keras 3 path under JAX, in subprocesses (this suite itself runs Keras 2).

* ``tests/keras3`` under ``KERAS_BACKEND=jax`` (under TensorFlow:
  tests/test_keras3_under_tensorflow.py, a separate file so that the two run in parallel);
* a small quantize + fit + evaluate + save under JAX with ``tensorflow`` and ``tf_keras`` made
  unimportable, through the top-level ``tf_qnets`` names: the Keras 3 path must not need
  TensorFlow;
* that file loaded under ``KERAS_BACKEND=tensorflow`` with ``tf_qnets.load_model``: the same hard
  outputs as under JAX (a model trained on one backend deploys from the other).
"""

import sys
import textwrap

import pytest

from keras3_subprocess import KERAS3_TESTS, run_keras3


def test_keras3_tests_pass_under_jax():
    pytest.importorskip("jax")
    run_keras3(KERAS3_TESTS, "jax")


NO_TENSORFLOW = textwrap.dedent("""
    import importlib.abc, os, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tf_keras"):
                raise ImportError(f"{name} is blocked: the Keras 3 path must not need it")
            return None

    sys.meta_path.insert(0, Blocked())

    import keras
    import numpy as np
    import tf_qnets

    assert keras.backend.backend() == "jax"
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6, 6, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Conv2D(4, 3),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(2),
    ])
    x = np.random.default_rng(0).normal(size=(32, 6, 6, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int32")
    qat = tf_qnets.quantize_model(model, 3, 3, calibration_data=x, verbose=0)   # the Keras 3 path
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"], jit_compile=True)
    qat.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[tf_qnets.TemperatureScheduler()])
    loss, accuracy = qat.evaluate(x, y, verbose=0)
    assert np.isfinite(loss), loss
    assert set(tf_qnets.get_temperatures(qat).values()) == {100.0}
    assert tf_qnets.count_quantizers(qat) > 0
    folder = os.environ["QNETS_EXCHANGE"]
    qat.save(os.path.join(folder, "qat.keras"))
    np.save(os.path.join(folder, "x.npy"), x)
    np.save(os.path.join(folder, "hard.npy"), qat.predict(x, verbose=0))
    assert not any(name.split(".")[0] in ("tensorflow", "tf_keras") for name in sys.modules)
    print("no-tensorflow run ok", loss, accuracy)
""")


LOAD_UNDER_TENSORFLOW = textwrap.dedent("""
    import os
    import keras
    import numpy as np
    import tf_qnets

    assert keras.backend.backend() == "tensorflow"
    folder = os.environ["QNETS_EXCHANGE"]
    loaded = tf_qnets.load_model(os.path.join(folder, "qat.keras"))
    x = np.load(os.path.join(folder, "x.npy"))
    expected = np.load(os.path.join(folder, "hard.npy"))
    got = loaded.predict(x, verbose=0)
    scale = float(np.abs(expected).max())
    assert np.allclose(got, expected, rtol=0, atol=1e-5 * scale), np.abs(got - expected).max()
    assert (got.argmax(-1) == expected.argmax(-1)).all()
    assert set(tf_qnets.get_temperatures(loaded).values()) == {100.0}
    print("cross-backend load ok", float(np.abs(got - expected).max()))
""")


def test_keras3_path_runs_under_jax_without_tensorflow_and_loads_under_tensorflow(tmp_path):
    pytest.importorskip("jax")
    exchange = {"QNETS_EXCHANGE": str(tmp_path)}
    output = run_keras3([sys.executable, "-c", NO_TENSORFLOW], "jax", exchange)
    assert "no-tensorflow run ok" in output
    output = run_keras3([sys.executable, "-c", LOAD_UNDER_TENSORFLOW], "tensorflow", exchange)
    assert "cross-backend load ok" in output

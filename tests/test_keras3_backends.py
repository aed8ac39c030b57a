"""The Keras 3 path under each backend, in subprocesses (this suite itself runs Keras 2).

* ``tests/keras3`` under ``KERAS_BACKEND=tensorflow`` and ``KERAS_BACKEND=jax``;
* a small quantize + fit + evaluate + save under JAX with ``tensorflow`` and ``tf_keras`` made
  unimportable, through the top-level ``tf_qnets`` names: the Keras 3 path must not need
  TensorFlow;
* that file loaded under ``KERAS_BACKEND=tensorflow`` with ``tf_qnets.load_model``: the same hard
  outputs as under JAX (a model trained on one backend deploys from the other).
"""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 1200


def _run(command, backend, extra_env=None):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.update(extra_env or {})
    env.pop("TF_USE_LEGACY_KERAS", None)     # Keras 3, whatever the parent process chose
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    output = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, f"rc {result.returncode}; output tail:\n{output}"
    return output


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_keras3_tests_pass_under_the_backend(backend):
    pytest.importorskip(backend)
    _run([sys.executable, "-m", "pytest", "tests/keras3", "--confcutdir", "tests/keras3", "-q",
          "-p", "no:cacheprovider"], backend)


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
    output = _run([sys.executable, "-c", NO_TENSORFLOW], "jax", exchange)
    assert "no-tensorflow run ok" in output
    output = _run([sys.executable, "-c", LOAD_UNDER_TENSORFLOW], "tensorflow", exchange)
    assert "cross-backend load ok" in output

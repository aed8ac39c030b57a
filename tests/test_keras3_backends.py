"""The Keras 3 path under each backend, in subprocesses (this suite itself runs Keras 2).

* ``tests/keras3`` under ``KERAS_BACKEND=tensorflow`` and ``KERAS_BACKEND=jax``;
* a small quantize + fit + evaluate under JAX with ``tensorflow`` and ``tf_keras`` made
  unimportable, through ``tf_qnets.quantize_model``: the Keras 3 path must not need TensorFlow.
"""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 1200


def _run(command, backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
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
    import importlib.abc, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tf_keras"):
                raise ImportError(f"{name} is blocked: the Keras 3 path must not need it")
            return None

    sys.meta_path.insert(0, Blocked())

    import keras
    import numpy as np
    import tf_qnets
    from tf_qnets.keras3 import TemperatureScheduler

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
    qat.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[TemperatureScheduler()])
    loss, accuracy = qat.evaluate(x, y, verbose=0)
    assert np.isfinite(loss), loss
    assert not any(name.split(".")[0] in ("tensorflow", "tf_keras") for name in sys.modules)
    print("no-tensorflow run ok", loss, accuracy)
""")


def test_keras3_path_runs_under_jax_without_tensorflow():
    pytest.importorskip("jax")
    output = _run([sys.executable, "-c", NO_TENSORFLOW], "jax")
    assert "no-tensorflow run ok" in output

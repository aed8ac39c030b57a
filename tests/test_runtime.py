"""The exported file runs in LiteRT in a process that never imports TensorFlow (requirement 6)."""

import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets import runtime  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402
from tf_qnets.export import export_tflite  # noqa: E402

RUNTIME_FILE = os.path.abspath(runtime.__file__)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Conv2D(3, 3, activation="relu", input_shape=(6, 6, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])
    x = (np.random.default_rng(0).integers(0, 256, (32, 6, 6, 1)) / 255.0).astype("float32")
    qat = tf_qnets.quantize_model(model, 3, 3, calibration_data=x, first_last="int8", verbose=0)
    folder = tmp_path_factory.mktemp("runtime")
    path = str(folder / "m.tflite")
    export_tflite(qat, path, x)
    np.save(folder / "x.npy", x)
    return qat, path, x, folder


def test_file_runs_in_a_process_without_tensorflow(exported):
    qat, path, x, folder = exported
    script = textwrap.dedent(f"""
        import importlib.util, sys
        import numpy as np
        spec = importlib.util.spec_from_file_location("qnets_runtime", {RUNTIME_FILE!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        interpreter = module.load_interpreter({path!r})
        y = module.predict(interpreter, np.load({str(folder / 'x.npy')!r}))
        np.save({str(folder / 'y.npy')!r}, y)
        assert "tensorflow" not in sys.modules, "tensorflow was imported"
        assert "tf_keras" not in sys.modules
        print("backend", interpreter.__class__.__module__)
    """)
    env = dict(os.environ, PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ai_edge_litert" in result.stdout or "tflite_runtime" in result.stdout
    y = np.load(folder / "y.npy")
    keras_out = qat(x, training=False).numpy()
    assert y.shape == keras_out.shape
    assert np.mean(y.argmax(1) == keras_out.argmax(1)) >= 0.9


def test_predict_checks_the_input_shape(exported):
    _, path, _, _ = exported
    with pytest.raises(ValueError, match="expects"):
        runtime.predict(runtime.load_interpreter(path), np.zeros((2, 5, 5, 1), np.float32))


def test_predict_handles_batches_of_any_size(exported):
    _, path, x, _ = exported
    interpreter = runtime.load_interpreter(path)
    whole = runtime.predict(interpreter, x, batch_size=32)
    pieces = runtime.predict(interpreter, x, batch_size=7)
    np.testing.assert_array_equal(whole, pieces)


def test_load_interpreter_accepts_bytes_and_reports_missing_files(exported, tmp_path):
    _, path, x, _ = exported
    with open(path, "rb") as handle:
        interpreter = runtime.load_interpreter(handle.read())
    assert runtime.predict(interpreter, x[:2]).shape == (2, 3)
    with pytest.raises(FileNotFoundError):
        runtime.load_interpreter(str(tmp_path / "absent.tflite"))


def test_builtin_only_resolver_loads_the_export(exported):
    _, path, _, _ = exported
    runtime.load_interpreter(path, builtin_only=True)

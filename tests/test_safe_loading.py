"""Loading never executes code from a file (issue 7, requirement 4).

* ``tf_qnets.load_model`` keeps Keras' safe mode on for ``.keras`` *and* ``.h5`` (tf_keras
  itself only guards ``.keras``): a ``Lambda`` layer's bytecode is refused, never run.
* The CLI reads arrays with ``allow_pickle=False``: a pickled payload is refused, never run.
* The package source has no pickle, ``eval(`` / ``exec(`` or ``safe_mode=False``.
* After ``import tf_qnets`` our classes are registered, so plain
  ``tf_keras.models.load_model`` restores a tf_qnets model without ``quantize_scope``.
"""

import os
import pathlib
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets import cli  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402

PACKAGE = pathlib.Path(tf_qnets.__file__).parent
FORBIDDEN = {
    "pickle module": re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|joblib)\b", re.M),
    "pickle call": re.compile(r"\bpickle\.(loads?|Unpickler)\b"),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "eval(": re.compile(r"(?<![\w.])eval\("),
    "exec(": re.compile(r"(?<![\w.])exec\("),
    "safe_mode=False": re.compile(r"safe_mode\s*=\s*False"),
}


def test_the_package_source_has_no_code_loading_primitives():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20
    found = [f"{path.relative_to(PACKAGE)}: {name}" for path in sources
             for name, pattern in FORBIDDEN.items() if pattern.search(path.read_text())]
    assert not found


def test_the_forbidden_patterns_do_match_what_they_forbid():
    samples = {"pickle module": "import pickle\n", "pickle call": "pickle.loads(b)",
               "allow_pickle=True": "np.load(p, allow_pickle=True)", "eval(": "x = eval(s)",
               "exec(": "exec(code)", "safe_mode=False": "load_model(p, safe_mode=False)"}
    for name, text in samples.items():
        assert FORBIDDEN[name].search(text), name
    assert not FORBIDDEN["allow_pickle=True"].search("np.load(p, allow_pickle=False)")
    assert not FORBIDDEN["eval("].search("model.evaluate(x)")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_lambda_layer_in_a_file_is_refused_and_never_runs(tmp_path, suffix, monkeypatch):
    marker = tmp_path / "code_ran"
    monkeypatch.setenv("TF_QNETS_TEST_MARKER", str(marker))
    path = str(tmp_path / ("lambda" + suffix))
    inputs = keras.Input((3,))
    # The lambda's body creates the marker file whenever it runs (it ran once while saving).
    outputs = keras.layers.Lambda(lambda t: t * 2.0 + float(bool(__import__("pathlib").Path(
        __import__("os").environ["TF_QNETS_TEST_MARKER"]).touch())))(inputs)
    keras.Model(inputs, outputs).save(path)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ValueError, match=r"`path` .* contains Python code.*never executes code"):
        tf_qnets.load_model(path)
    assert not marker.exists(), "the file's code was executed while loading"


def test_a_pickled_array_given_to_the_cli_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    data = tmp_path / "inputs.npy"
    # cli._load_array reads --representative and --verify.
    np.save(data, np.array([Payload()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"--representative: .* is not a \.npy/\.npz file"):
        cli._load_array(str(data), "--representative")
    assert not marker.exists()


@pytest.fixture(scope="module")
def qat():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Dense(6, activation="relu", input_shape=(4,), name="first"),
        keras.layers.Dense(5, activation="relu", name="middle"),
        keras.layers.Dense(2, name="last"),
    ])
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    return tf_qnets.quantize_model(model, 2, 2, calibration_data=x, first_last="low_bit", verbose=0), x


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_plain_tf_keras_load_model_works_after_import_without_the_scope(qat, tmp_path, suffix):
    model, x = qat
    path = str(tmp_path / ("qat" + suffix))
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)  # no quantize_scope()
    assert tf_qnets.count_quantizers(loaded) == tf_qnets.count_quantizers(model) == 5
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    safe = tf_qnets.load_model(path, compile=False)
    np.testing.assert_array_equal(safe.predict(x, verbose=0), model.predict(x, verbose=0))

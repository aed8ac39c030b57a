"""Nothing is lost (issue 7, requirement 3).

* ``quantize_model`` never modifies the user's model, also when it fails half way.
* Export writes are atomic: a failure while writing leaves the old file intact and no
  temporary file behind (through the Python API and through the CLI).
* The CLI answers every error with exit status 1 and exactly one error line on stderr
  (besides informational ``note:`` lines printed before the failure).
"""

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets import cli
from tf_qnets.keras2 import api  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402
from tf_qnets.export import convert, exporter  # noqa: E402


def float_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.layers.Dense(6, activation="relu", input_shape=(4,), name="first"),
        keras.layers.Dense(5, activation="relu", name="middle"),
        keras.layers.Dense(2, name="last"),
    ])


def snapshot(model):
    return (model.get_config(), [w.copy() for w in model.get_weights()],
            [type(layer).__name__ for layer in model.layers], [v.name for v in model.weights])


def assert_unchanged(model, before):
    config, weights, classes, names = snapshot(model)
    assert config == before[0]
    assert classes == before[2] and names == before[3]
    assert len(weights) == len(before[1])
    for new, old in zip(weights, before[1]):
        np.testing.assert_array_equal(new, old)


def test_quantize_model_leaves_the_input_model_untouched():
    model = float_model()
    before = snapshot(model)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    qat = tf_qnets.quantize_model(model, 2, 2, calibration_data=x, first_last="low_bit", verbose=0)
    assert tf_qnets.count_quantizers(qat) > 0
    assert_unchanged(model, before)
    assert not any(isinstance(layer, tf_qnets.QNetsWrapper) for layer in model.layers)
    assert all(layer.weights[0] is not q.weights[0] for layer, q in zip(model.layers, qat.layers[1:]))


def test_quantize_model_failing_half_way_leaves_the_input_model_untouched(monkeypatch):
    model = float_model()
    before = snapshot(model)

    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure after cloning and wrapping")

    monkeypatch.setattr(api, "initialize_weight_quantizers", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        tf_qnets.quantize_model(model, 2, first_last="low_bit", verbose=0)
    assert_unchanged(model, before)


def test_a_failure_in_the_middle_of_writing_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"old model")

    def disk_full(descriptor):
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(convert.os, "fsync", disk_full)  # after the bytes went to the temp file
    with pytest.raises(OSError, match="simulated"):
        convert.write_atomic(str(target), b"TFL3 new model bytes" * 100)
    assert target.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["m.tflite"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nothing_lost")
    qat = tf_qnets.quantize_model(float_model(), 2, first_last="low_bit", verbose=0)
    path = folder / "qat.keras"
    qat.save(str(path))
    keras.Sequential([keras.layers.Dense(2, input_shape=(4,))]).save(str(folder / "float.keras"))
    np.save(folder / "good.npy", np.zeros((8, 4), "float32"))
    np.save(folder / "wrong.npy", np.zeros((8, 5), "float32"))
    (folder / "corrupt.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 40)
    (folder / "garbage.keras").write_bytes(b"not a zip file")
    (folder / "text.npy").write_text("1 2 3")
    return folder


def fake_conversion(monkeypatch):
    """Skip the slow TFLite conversion: the export pipeline gets ready-made bytes."""
    monkeypatch.setattr(exporter, "make_plan", lambda *a, **k: None)
    monkeypatch.setattr(exporter, "calibrate", lambda plan, batches: None)
    monkeypatch.setattr(exporter, "trace", lambda plan, ranges, quantize=True: (None, type(
        "Lowering", (), {"staircase_lowerings": lambda self: {}, "reference_exact_fraction":
                         lambda self: None})()))
    monkeypatch.setattr(exporter, "convert_function", lambda *a, **k: b"\x1c\x00\x00\x00TFL3new")
    monkeypatch.setattr(exporter, "find_problems", lambda data: [])


def test_the_cli_keeps_the_old_file_when_the_write_fails(saved, tmp_path, monkeypatch, capsys):
    target = tmp_path / "out.tflite"
    target.write_bytes(b"old model")
    fake_conversion(monkeypatch)

    def disk_full(descriptor):
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(convert.os, "fsync", disk_full)
    status = cli.main(["export", str(saved / "qat.keras"), "-o", str(target),
                       "--representative", str(saved / "good.npy")])
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "No space left on device" in err
    assert target.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["out.tflite"]


CLI_ERRORS = [
    ("missing model", ["export", "{d}/none.keras", "-o", "{t}/o.tflite"], r"model: no file"),
    ("garbage model", ["export", "{d}/garbage.keras", "-o", "{t}/o.tflite"], r"cannot load model"),
    ("float model", ["export", "{d}/float.keras", "-o", "{t}/o.tflite"], r"quantize_model"),
    ("wrong representative shape", ["export", "{d}/qat.keras", "-o", "{t}/o.tflite",
                                     "--representative", "{d}/wrong.npy"], r"representative_data.*shape"),
    ("representative not npy", ["export", "{d}/qat.keras", "-o", "{t}/o.tflite",
                                "--representative", "{d}/text.npy"], r"--representative: .*not a \.npy"),
    ("representative missing", ["export", "{d}/qat.keras", "-o", "{t}/o.tflite",
                                "--representative", "{d}/none.npy"], r"--representative: no file"),
    ("output folder missing", ["export", "{d}/qat.keras", "-o", "{t}/no/o.tflite"], r"does not exist"),
    ("output is a folder", ["export", "{d}/qat.keras", "-o", "{t}"], r"is a folder"),
    ("empty input range", ["export", "{d}/qat.keras", "-o", "{t}/o.tflite", "--input-range", "1", "1"],
     r"--input-range: HI must exceed LO"),
    ("inspect corrupt", ["inspect", "{d}/corrupt.tflite"], r"corrupt TFLite file"),
    ("inspect not tflite", ["inspect", "{d}/good.npy"], r"not a TFLite model"),
    ("inspect missing", ["inspect", "{d}/none.tflite"], r"no file at"),
]


@pytest.mark.parametrize("argv,pattern", [c[1:] for c in CLI_ERRORS], ids=[c[0] for c in CLI_ERRORS])
def test_every_cli_error_exits_1_with_one_line(saved, tmp_path, capsys, argv, pattern):
    argv = [a.format(d=saved, t=tmp_path) for a in argv]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    errors = [line for line in lines if not line.startswith("note: ")]  # notes are not errors
    assert len(errors) == 1, captured.err
    assert errors[0].startswith(f"tf-qnets {argv[0]}: error: ")
    assert re.search(pattern, errors[0]), errors[0]
    assert os.listdir(tmp_path) == []

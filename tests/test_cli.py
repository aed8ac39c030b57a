"""The ``tf-qnets`` command: export and inspect, one-line errors with a non-zero status."""

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402
from tf_qnets.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Conv2D(3, 3, activation="relu", input_shape=(6, 6, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(2),
    ])
    x = np.random.default_rng(0).uniform(0, 1, (16, 6, 6, 1)).astype("float32")
    qat = tf_qnets.quantize_model(model, 2, 2, calibration_data=x, first_last="int8", verbose=0)
    folder = tmp_path_factory.mktemp("cli")
    qat.save(str(folder / "qat_savedmodel"), save_format="tf")
    np.save(folder / "rep.npy", x)
    np.savez(folder / "check.npz", x=x, y=np.zeros(16, int))
    keras.utils.set_random_seed(0)
    model.save(str(folder / "float.h5"))
    return folder


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("tf-qnets")]
    assert len(errors) == 1, err
    return errors[0]


def test_export_and_inspect(saved, capsys):
    out = str(saved / "m.tflite")
    status = main(["export", str(saved / "qat_savedmodel"), "-o", out,
                   "--representative", str(saved / "rep.npy"), "--verify", str(saved / "check.npz")])
    assert status == 0
    text = capsys.readouterr().out
    assert "CONV_2D" in text and "agreement" in text and os.path.isfile(out)
    assert main(["inspect", out]) == 0
    text = capsys.readouterr().out
    assert f"{os.path.getsize(out)} bytes" in text
    assert "INT4" not in text and re.search(r"(\d+ x )?\[-1, 0, 1\]", text), text
    packed = str(saved / "m4.tflite")
    assert main(["export", str(saved / "qat_savedmodel"), "-o", packed, "--int4-weights", "on",
                 "--representative", str(saved / "rep.npy")]) == 0
    capsys.readouterr()
    assert main(["inspect", packed]) == 0
    text = capsys.readouterr().out
    assert "INT4" in text and "[-1, 0, 1]" in text


def test_export_without_representative_data_says_how_it_calibrated(saved, capsys):
    out = str(saved / "u.tflite")
    assert main(["export", str(saved / "qat_savedmodel"), "-o", out, "--int8-io",
                 "--int4-weights", "off"]) == 0
    captured = capsys.readouterr()
    assert "uniform inputs" in captured.err
    assert "INT4" not in captured.out.split("tensor dtypes:")[1].splitlines()[0]


def test_export_of_a_float_model_fails_with_one_line(saved, capsys):
    status = main(["export", str(saved / "float.h5"), "-o", str(saved / "f.tflite")])
    assert status == 1
    assert "quantize_model" in _one_error_line(capsys)
    assert not os.path.exists(saved / "f.tflite")


def test_export_of_a_missing_model_fails(saved, capsys):
    assert main(["export", str(saved / "nothing.keras"), "-o", str(saved / "x.tflite")]) == 1
    assert "no file or folder" in _one_error_line(capsys)


def test_export_to_an_unwritable_path_fails(saved, capsys):
    status = main(["export", str(saved / "qat_savedmodel"), "-o", str(saved / "no" / "m.tflite"),
                   "--representative", str(saved / "rep.npy")])
    assert status == 1
    assert "does not exist" in _one_error_line(capsys)


def test_export_with_mis_shaped_representative_data_fails(saved, capsys, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((4, 5, 5, 1), np.float32))
    status = main(["export", str(saved / "qat_savedmodel"), "-o", str(tmp_path / "m.tflite"),
                   "--representative", str(tmp_path / "bad.npy")])
    assert status == 1
    assert "shape" in _one_error_line(capsys)


def test_inspect_of_a_corrupt_file_fails_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    assert main(["inspect", str(bad)]) == 1
    assert "not a TFLite model" in _one_error_line(capsys)


def test_usage_errors_exit_non_zero():
    with pytest.raises(SystemExit) as raised:
        main(["export"])
    assert raised.value.code != 0

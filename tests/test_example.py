"""The README's main job, examples/fashion_mnist.py, runs end to end on a small subset."""

import json
import os
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)

import fashion_mnist  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("example")
    argv = ["--quick", "--train-samples", "2048", "--test-samples", "512", "--float-epochs", "2",
            "--output-dir", str(out),
            "--bits", "W3A3"]
    fashion_mnist.main(argv)
    return out, argv


def test_writes_results_tflite_and_pictures(run):
    out, _ = run
    for name in ("results.json", "W3A3.tflite", "W3A3_staircases.png", "accuracy_vs_bits.png",
                 "float_model.keras"):
        assert (out / name).exists(), name


def test_tflite_in_the_standalone_runtime_agrees_with_the_keras_hard_model(run):
    out, _ = run
    results = json.loads((out / "results.json").read_text())
    row = results["quantized"][0]
    assert row["setting"] == "W3A3"
    assert row["agreement"] >= 0.9
    assert abs(row["tflite"] - row["keras_hard"]) <= 0.05
    assert 0.0 <= results["float"] <= 1.0


def test_a_rerun_reuses_the_cached_float_model(run, capsys):
    out, argv = run
    args = fashion_mnist.parse_args(argv)
    train, _ = fashion_mnist.load_data(args)
    fashion_mnist.float_model(args, train, None)
    assert "reusing" in capsys.readouterr().out


def test_bad_bits_flag_is_a_clear_usage_error(capsys):
    with pytest.raises(SystemExit):
        fashion_mnist.parse_args(["--bits", "W9A3"])
    assert "must be from 1 to 8" in capsys.readouterr().err


def test_the_example_runs_on_keras3_under_jax(tmp_path):
    """``--keras 3 --backend jax``: the same outputs from a Keras 3 model trained on JAX and
    exported in the same process."""
    pytest.importorskip("jax")
    from keras3_subprocess import run_keras3

    output = run_keras3([sys.executable, os.path.join(EXAMPLES, "fashion_mnist.py"), "--quick",
                         "--keras", "3", "--backend", "jax", "--train-samples", "1024",
                         "--test-samples", "256", "--float-epochs", "1",
                         "--output-dir", str(tmp_path), "--bits", "W3A3"], "jax")
    assert "Keras 3 (jax)" in output and "(no TensorFlow in that process)" in output, output
    for name in ("results.json", "W3A3.tflite", "W3A3_staircases.png", "accuracy_vs_bits.png",
                 "float_model_keras3_jax.keras"):
        assert (tmp_path / name).exists(), name
    row = json.loads((tmp_path / "results.json").read_text())["quantized"][0]
    assert row["agreement"] >= 0.9, row
    assert abs(row["tflite"] - row["keras_hard"]) <= 0.05, row


def test_backend_without_keras3_is_a_clear_usage_error(capsys):
    with pytest.raises(SystemExit):
        fashion_mnist.parse_args(["--backend", "jax"])
    assert "add --keras 3" in capsys.readouterr().err

"""The benchmark scripts' own logic (argument types, report text, Markdown splicing, the
step timer), without their long measurements."""

import argparse
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import accuracy  # noqa: E402
import train_speed  # noqa: E402
from fashion_mnist import temperature_base  # noqa: E402


@pytest.mark.parametrize("text,value", [("auto", "auto"), ("50", 50.0), ("2.5", 2.5)])
def test_temperature_base_argument_accepts_auto_and_positive_numbers(text, value):
    assert temperature_base(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "inf", "nan", "hot"])
def test_temperature_base_argument_rejects_the_rest(text):
    with pytest.raises(argparse.ArgumentTypeError, match="'auto' or a positive number"):
        temperature_base(text)


@pytest.mark.parametrize("epochs,expected", [(1, "100 * (epoch + 1)"), (2, "50 * (epoch + 1)"),
                                             (20, "10 * (epoch + 1)")])
def test_accuracy_report_states_the_temperature_schedule_used(epochs, expected):
    args = accuracy.parse_args(["--epochs", str(epochs)])
    assert accuracy.schedule_text(args).startswith(expected)
    args = accuracy.parse_args(["--epochs", str(epochs), "--temperature-base", "7"])
    assert accuracy.schedule_text(args) == "7 * (epoch + 1)"


def test_accuracy_fine_tune_learning_rate_is_cosine_by_default():
    train = (np.zeros((1000, 28, 28, 1), "float32"), np.zeros(1000, "int32"))
    args = accuracy.parse_args(["--epochs", "2", "--batch-size", "100"])
    schedule = accuracy.fine_tune_learning_rate(args, train)
    assert float(schedule(0)) == pytest.approx(2e-4)
    assert float(schedule(10)) == pytest.approx(1e-4)       # half-way through 20 steps
    assert float(schedule(20)) == pytest.approx(0.0, abs=1e-12)
    assert args.recalibrate
    constant = accuracy.parse_args(["--lr-schedule", "constant", "--no-recalibrate"])
    assert accuracy.fine_tune_learning_rate(constant, train) == 2e-4 and not constant.recalibrate


def test_accuracy_markdown_replaces_only_its_own_block(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n## Training speed\n\nkept\n")
    args = accuracy.parse_args(["--epochs", "2", "--methods", "float", "tfmot-W2A2"])
    rows = [{"method": "float", "keras": 0.9253, "tflite": 0.9253, "bytes": 564828,
             "seconds_per_epoch": None, "note": ""},
            {"method": "tfmot-W2A2", "keras": 0.5, "tflite": None, "bytes": None,
             "seconds_per_epoch": 100.0, "note": "TFLite: ConverterError: x"}]
    for _ in range(2):            # written twice: replaced, not appended again
        accuracy.write_markdown(str(path), accuracy.markdown(rows, args, None, 600.0))
    text = path.read_text()
    assert text.count("<!-- accuracy:begin -->") == 1 and "kept" in text
    assert "| float | 32/32 | - | 92.53% | 92.53% | 551.6 KiB | - |" in text
    assert "| tfmot-W2A2 | 2/2 | - | 50.00% | n/a | n/a | 100.0 |" in text
    assert "Partial" not in text
    assert "- tfmot-W2A2: TFLite: ConverterError: x" in text


def test_accuracy_markdown_states_each_target_and_a_partial_run():
    args = accuracy.parse_args(["--epochs", "2"])
    rows = [{"method": m, "init": i, "keras": k, "tflite": None, "bytes": None,
             "seconds_per_epoch": None, "note": ""}
            for m, i, k in (("float", None, 0.9250), ("tfmot-W2A2", 0.3, 0.4900),
                            ("qnets-W3", 0.9, 0.9225), ("qnets-W2A2", 0.7, 0.8800),
                            ("qnets-W3A3", 0.89, 0.9100))]
    text = accuracy.markdown(rows, args, None, 60.0)
    assert "| qnets-W3 | 3/32 | 90.00% | 92.25% |" in text
    assert "- qnets-W3 within 0.3 points of float: +0.25 points below -> met" in text
    assert "- qnets-W2A2 above tfmot-W2A2: 88.00% vs 49.00% -> met" in text
    assert "- qnets-W3A3 within 1 point of float: +1.50 points below -> not met" in text
    assert "W4A4" not in text.split("Targets")[1]          # not measured, not claimed
    assert f"Partial: 5 of {len(accuracy.METHODS)} methods done" in text


def test_speed_summary_reports_each_target_from_the_fastest_configuration():
    times = {("float", False): 0.100, ("float", True): 0.150, ("tfmot8", False): 0.120,
             ("tfmot8", True): 0.200, ("W3A2", False): 0.130, ("W3A2", True): 0.140,
             ("W3A3", False): 0.140, ("W3A3", True): 0.300, ("W3A8", False): 0.150,
             ("W3A8", True): 0.160}
    memory = {key: {"peak_mib": 100.0 if key[0] == "float" else 120.0, "rss_mib": 900.0}
              for key in times}
    text = train_speed.summary(times, memory)
    assert "W3A3 / float (fastest of each): 1.40 (target <= 1.3): not met" in text
    assert "W3A3 / tfmot 8-bit QAT (fastest of each): 1.17 (target <= 1.1): not met" in text
    assert "W3A8 / W3A2 (fastest of each): 1.15 (target <= 1.1): not met" in text
    assert "W3A3 / float peak TF buffers (smallest of each): 1.20 (target <= 1.25): met" in text
    assert "-exact" not in text and "kmeans" not in text
    times.update({("W3A3-exact", False): 0.125, ("W3A3-exact", True): 0.250,
                  ("W3A8-kmeans", False): 0.300, ("W3A8-kmeans", True): 0.290})
    text = train_speed.summary(times, None)
    assert "W3A3 / W3A3-exact (fastest of each; the smooth activation gradient's cost): 1.12" in text
    assert "W3A8-kmeans / W3A8 (fastest of each; k-means 8-bit activation thresholds' cost): 1.93" in text


def test_speed_default_run_measures_the_defaults_and_what_the_targets_compare():
    names = set(train_speed.config_names())
    assert set(train_speed.DEFAULT_CONFIGS) <= names
    assert set(train_speed.DEFAULT_MEMORY_CONFIGS) <= names
    compared = {name for _, a, b, _ in train_speed.SPEED_TARGETS for name in (a, b)}
    assert compared <= set(train_speed.DEFAULT_CONFIGS)
    assert {"float", "W3A3"} <= set(train_speed.DEFAULT_MEMORY_CONFIGS)
    assert {"W3A2", "W3A3", "W3A4", "W3A8", "W3"} <= set(train_speed.DEFAULT_CONFIGS)


def test_speed_exact_configuration_builds_the_exact_activation_gradient():
    import tf_qnets

    assert "W3A3-exact" in train_speed.config_names()
    gradients = {}
    for name in ("W3A3", "W3A3-exact"):
        model = train_speed.build(name, jit=False, temperature=10.0)
        gradients[name] = {quantizer.gradient for _, role, _, quantizer, _
                           in tf_qnets.quantizer_states(model) if role == "output"}
    assert gradients == {"W3A3": {"smooth"}, "W3A3-exact": {"exact"}}


def test_speed_kmeans_configuration_takes_non_uniform_activation_thresholds():
    import tf_qnets

    model = train_speed.build("W3A8-kmeans", jit=False, temperature=10.0)
    spacings = [np.diff(variables["thresholds"].numpy()) for _, role, _, _, variables
                in tf_qnets.quantizer_states(model) if role == "output"]
    assert spacings and all(np.ptp(d) > 1e-3 for d in spacings)


def test_speed_step_runs_the_compiled_train_function_on_one_iterator():
    from tf_qnets._keras import keras

    model = train_speed._float_model(keras)
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    step = train_speed.training_step(model)
    losses = [step() for _ in range(3)]
    assert all(np.isfinite(losses))
    assert int(model.optimizer.iterations.numpy()) == 3


def test_finetune_probe_parses_its_flags_and_asks_for_the_float_model_first(tmp_path):
    import finetune_probe

    args = finetune_probe.parse_args(["--w-bits", "2", "--a-bits", "2", "--temperature-base", "10"])
    assert (args.w_bits, args.a_bits, args.temperature_base, args.epochs) == (2, 2, 10.0, 2)
    defaults = finetune_probe.parse_args([])
    assert defaults.temperature_base == "auto"
    assert (defaults.lr_schedule, defaults.activation_gradient, defaults.recalibrate_batch_norm) == (
        "constant", "smooth", False)
    assert defaults.recalibrate_images == [4096]
    recipe = finetune_probe.parse_args(["--lr-schedule", "cosine", "--activation-gradient", "exact",
                                        "--recalibrate-batch-norm", "--recalibrate-images", "8",
                                        "60000"])
    assert (recipe.lr_schedule, recipe.activation_gradient, recipe.recalibrate_batch_norm) == (
        "cosine", "exact", True)
    assert recipe.recalibrate_images == [8, 60000]
    with pytest.raises(SystemExit, match="benchmarks/accuracy.py"):
        finetune_probe.main(["--float-model", str(tmp_path / "missing.keras")])


"""The benchmark scripts' own logic (argument types, report text, Markdown splicing, the
step timer), without their long measurements."""

import argparse
import os
import re
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
    assert args.recalibration_check
    constant = accuracy.parse_args(["--lr-schedule", "constant", "--skip-recalibration-check"])
    assert accuracy.fine_tune_learning_rate(constant, train) == 2e-4 and not constant.recalibration_check
    with pytest.raises(SystemExit):       # the old flag is gone: every method is fit -> evaluate
        accuracy.parse_args(["--no-recalibrate"])


def test_accuracy_weight_gradient_flag_reaches_quantize_model_and_the_report(monkeypatch):
    seen = {}
    monkeypatch.setattr(accuracy.tf_qnets, "quantize_model", lambda net, **kw: seen.update(kw))
    train = (np.zeros((4, 28, 28, 1), "float32"), np.zeros(4, "int32"))
    for flags, expected in (([], None), (["--gradient", "smooth"], "smooth")):
        args = accuracy.parse_args(["--epochs", "2", "--archs", "vgg", "--methods", "qnets-W4A4", *flags])
        accuracy.qnets_model(None, "qnets-W4A4", train, args)
        assert seen["gradient"] == expected and (seen["w_bits"], seen["a_bits"]) == (4, 4)
        text = accuracy.markdown([], args, None, 60.0)
        assert ("weight gradient 'smooth'" in text) == (expected == "smooth")
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--gradient", "steep"])


def test_accuracy_markdown_replaces_only_its_own_block(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n## Training speed\n\nkept\n")
    args = accuracy.parse_args(["--epochs", "2", "--archs", "vgg", "--methods", "float", "tfmot-W2A2"])
    rows = [{"method": "float", "keras": 0.9253, "tflite": 0.9253, "bytes": 564828,
             "seconds_per_epoch": None, "note": ""},
            {"method": "tfmot-W2A2", "keras": 0.5, "tflite": None, "bytes": None,
             "seconds_per_epoch": 100.0, "note": "TFLite: ConverterError: x"}]
    for _ in range(2):            # written twice: replaced, not appended again
        accuracy.write_markdown(str(path), accuracy.markdown(rows, args, None, 600.0))
    text = path.read_text()
    assert text.count("<!-- accuracy:begin -->") == 1 and "kept" in text
    assert "| float | 32/32 | - | 92.53% | - | 92.53% | 551.6 KiB | - |" in text
    assert "| tfmot-W2A2 | 2/2 | - | 50.00% | - | n/a | n/a | 100.0 |" in text
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
    assert args.archs == ["vgg", "resnet"]
    assert f"Partial: 5 of {2 * len(accuracy.DEFAULT_METHODS)} methods done" in text


def test_accuracy_default_methods_and_quick_settings():
    args = accuracy.parse_args([])
    assert args.methods == ["float", "tfmot-8bit", "tfmot-W4A4", "tfmot-W3A3", "tfmot-W2A2",
                            "qkeras-W4A4", "qkeras-W3A3", "qkeras-W2A2", "qnets-W3", "qnets-W4A4",
                            "qnets-W3A3", "qnets-W2A2", "qnets-keras3-W3", "qnets-keras3-W3A3",
                            "qnets-keras3-W2A2"]
    assert (args.archs, args.float_epochs, args.epochs) == (["vgg", "resnet"], 15, 4)
    assert args.markdown.endswith(os.path.join("docs", "benchmarks.md"))
    kept = accuracy.parse_args(["--methods", "qnets-W1", "qnets-W2", "qnets-W1A2"])
    assert kept.methods == ["qnets-W1", "qnets-W2", "qnets-W1A2"]       # still selectable
    quick = accuracy.parse_args(["--quick"])
    assert (quick.float_epochs, quick.epochs, quick.markdown) == (15, 1, None)
    assert [accuracy.bits_of(m) for m in ("qkeras-W3A3", "tfmot-W3A3", "qnets-W3")] == [
        "3/3", "3/3", "3/32"]


def test_accuracy_targets_compare_both_peers_recalibration_and_the_bit_ladder():
    def row(method, keras_acc, recal=None):
        return {"arch": "resnet", "method": method, "init": None, "keras": keras_acc, "recal": recal,
                "tflite": None, "bytes": None, "seconds_per_epoch": None, "note": ""}

    rows = [row("qkeras-W4A4", 0.9000), row("tfmot-W4A4", 0.9100), row("qnets-W4A4", 0.9050, 0.9070),
            row("qkeras-W2A2", 0.8000), row("tfmot-W2A2", 0.5000), row("qnets-W2A2", 0.8500, 0.8900),
            row("qnets-W3A3", 0.9060, 0.9060)]
    args = accuracy.parse_args(["--archs", "resnet", "--methods", *[r["method"] for r in rows]])
    text = accuracy.markdown(rows, args, {"resnet": 12.0}, 60.0)
    targets = text.split("Targets (resnet, Keras test accuracy):")[1]
    assert "- qnets-W4A4 above qkeras-W4A4 and tfmot-W4A4: 90.50% vs 90.00% and 91.00% -> not met" in targets
    assert "- qnets-W2A2 above qkeras-W2A2 and tfmot-W2A2: 85.00% vs 80.00% and 50.00% -> met" in targets
    assert "W3A3 above" not in targets                          # no peer measured at W3A3
    assert ("qnets-W4A4 90.50% vs 90.70% (-0.20), qnets-W2A2 85.00% vs 89.00% (-4.00), "
            "qnets-W3A3 90.60% vs 90.60% (+0.00) -> not met (qnets-W2A2)") in targets
    assert "- qnets W4A4 >= W3A3 >= W2A2: 90.50% >= 90.60% >= 85.00% -> not met" in targets
    assert "### resnet: build_resnet(width=16)" in text and "Float model: 15 epochs (12 s/epoch)." in text
    assert "| qnets-W2A2 | 2/2 | - | 85.00% | 89.00% | n/a | n/a | - |" in text
    assert "Partial" not in text
    rows[2]["recal"], rows[5]["recal"] = 0.9030, 0.8530004   # prints as 0.30: met
    rows[6]["keras"] = 0.9000
    targets = accuracy.markdown(rows, args, None, 60.0).split("Targets")[1]
    assert ("(+0.20), qnets-W2A2 85.00% vs 85.30% (-0.30), qnets-W3A3 90.00% vs 90.60% (-0.60) "
            "-> not met (qnets-W3A3)") in targets
    assert "- qnets W4A4 >= W3A3 >= W2A2: 90.50% >= 90.00% >= 85.00% -> met" in targets


def test_qkeras_model_quantizes_the_inner_kernel_layers_and_every_relu_and_keeps_the_weights():
    import qkeras
    from fashion_mnist_model import build_cnn, build_resnet
    from tf_qnets.keras2.backend import keras

    inputs = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    for float_net, n_inner in ((build_cnn(width=4), 4), (build_resnet(width=4), 8)):
        kernels = [layer.name for layer in float_net.layers if type(layer).__name__ in ("Conv2D", "Dense")]
        relus = [layer.name for layer in float_net.layers if type(layer).__name__ == "ReLU"]
        model = accuracy.qkeras_model(float_net, 2, 3, 1)
        kinds = {layer.name: type(layer).__name__ for layer in model.layers}
        assert (kinds[kernels[0]], kinds[kernels[-1]]) == ("Conv2D", "Dense")      # first/last float
        assert [kinds[name] for name in kernels[1:-1]] == ["QConv2D"] * n_inner
        assert relus and all(kinds[name] == "QActivation" for name in relus)
        assert "ReLU" not in kinds.values()
        assert sum(kind == "BatchNormalization" for kind in kinds.values()) == sum(
            type(layer).__name__ == "BatchNormalization" for layer in float_net.layers)
        for layer in float_net.layers:
            ours, theirs = layer.get_weights(), model.get_layer(layer.name).get_weights()
            assert len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs))
        conv = model.get_layer(kernels[1])
        quantizer = conv.kernel_quantizer_internal
        assert (quantizer.bits, quantizer.alpha, bool(quantizer.symmetric), quantizer.keep_negative) == (
            2, "auto_po2", True, True)
        values = quantizer(conv.kernel).numpy()
        for channel in range(values.shape[-1]):      # ternary per output channel, power-of-2 scale
            levels = np.unique(values[..., channel])
            scale = np.abs(levels).max()
            assert set(np.round(levels / scale, 6)) <= {-1.0, 0.0, 1.0}
            assert np.log2(scale) == np.round(np.log2(scale))
        relu = model.get_layer(relus[0])
        assert isinstance(relu.quantizer, qkeras.quantized_relu)
        assert (relu.quantizer.bits, relu.quantizer.integer) == (3, 1)
        outputs = relu(np.linspace(-1.0, 3.0, 401, dtype=np.float32)).numpy()
        np.testing.assert_allclose(np.unique(outputs), np.arange(8) / 4)          # [0, 2), step 1/4
        assert np.all(np.isfinite(model(inputs).numpy()))
    with_relu6 = keras.Sequential([keras.layers.Dense(4, input_shape=(3,)), keras.layers.Dense(4),
                                   keras.layers.ReLU(max_value=6.0), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="only a plain ReLU"):
        accuracy.qkeras_model(with_relu6, 2, 2, 0)


def test_build_resnet_has_residual_adds_and_quantizes_with_tf_qnets():
    import tf_qnets
    from fashion_mnist_model import build_resnet
    from tf_qnets.keras2.backend import keras

    model = build_resnet(width=8)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Add") == 3 and kinds.count("ReLU") == 7 and kinds.count("Conv2D") == 9
    assert all(not layer.use_bias for layer in model.layers if type(layer).__name__ == "Conv2D")
    assert model.get_layer("s3b1_add").output.shape[1:] == (7, 7, 32)
    assert model.output.shape[1:] == (10,)
    assert len(build_resnet(width=4, blocks_per_stage=2).layers) > len(build_resnet(width=4).layers)
    rng = np.random.default_rng(0)
    x = rng.random((256, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 256).astype("int32")
    qat = tf_qnets.quantize_model(model, w_bits=3, a_bits=3, calibration_data=x[:256], verbose=0)
    names = {layer.name for layer in qat.layers}
    assert "stem_conv" in names and "logits" in names                     # first/last stay float
    assert {"quant_s1b1_1_conv", "quant_s2b1_short_conv", "quant_s3b1_2_conv"} <= names
    assert {f"quant_{layer.name}" for layer in model.layers if type(layer).__name__ == "ReLU"} <= names
    assert sum(type(layer).__name__ == "Add" for layer in qat.layers) == 3
    qat.compile(keras.optimizers.Adam(1e-3),       # eager: one step needs no graph tracing
                keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    history = qat.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(qat.optimizer.iterations.numpy()) == 1


def test_accuracy_quick_run_of_qkeras_and_tf_qnets_on_the_resnet(tmp_path):
    markdown_path = tmp_path / "benchmarks.md"
    markdown_path.write_text("# Benchmarks\n\nkept\n")
    rows = accuracy.main(["--quick", "--subset", "256", "256", "--float-epochs", "1",
                          "--resnet-width", "8", "--archs", "resnet",
                          "--methods", "qkeras-W2A2", "qnets-W2A2", "qnets-keras3-W2A2",
                          "--output-dir", str(tmp_path / "out"), "--markdown", str(markdown_path)])
    assert [(row["arch"], row["method"]) for row in rows] == [
        ("resnet", "qkeras-W2A2"), ("resnet", "qnets-W2A2"), ("resnet", "qnets-keras3-W2A2")]
    qkeras_row, qnets_row, keras3_row = rows
    assert qkeras_row["recal"] is None and qkeras_row["tflite"] is None
    assert "QKeras has no integer TFLite path" in qkeras_row["note"]
    assert "quantized_relu integer=" in qkeras_row["note"]
    assert 0.0 <= qnets_row["recal"] <= 1.0 and 0.0 <= qnets_row["tflite"] <= 1.0
    assert qnets_row["bytes"] > 0 and qnets_row["note"] == ""      # the restored model scored the same
    assert (tmp_path / "out" / "float_resnet_w8_e1_quick_n256_s0.keras").exists()
    assert (tmp_path / "out" / "resnet_qnets-W2A2.tflite").exists()
    text = markdown_path.read_text()
    assert "kept" in text and text.count("<!-- accuracy:begin -->") == 1
    assert ("| method | W/A bits | acc. after quantizing | Keras test acc "
            "| with extra recalibrate_batch_norm | TFLite test acc |") in text
    assert "### resnet: build_resnet(width=8)" in text and "### vgg" not in text
    assert (f"| qkeras-W2A2 | 2/2 | {100 * qkeras_row['init']:.2f}% | {100 * qkeras_row['keras']:.2f}% "
            "| - | n/a | n/a |") in text
    assert (f"| qnets-W2A2 | 2/2 | {100 * qnets_row['init']:.2f}% | {100 * qnets_row['keras']:.2f}% "
            f"| {100 * qnets_row['recal']:.2f}% | {100 * qnets_row['tflite']:.2f}% |") in text
    assert "- qkeras-W2A2: activation range [0, " in text
    assert "Targets (resnet, Keras test accuracy):" in text
    assert "- qnets-W2A2 above qkeras-W2A2: " in text
    assert "recalibrate_batch_norm figure: qnets-W2A2 " in text
    assert "Partial" not in text
    # the Keras 3 row: measured in a JAX process from the same float weights, exported, in the table
    assert keras3_row["note"].startswith("Keras 3 ") and " on jax, same float weights" in keras3_row["note"]
    assert "TFLite:" not in keras3_row["note"] and keras3_row["bytes"] > 0
    assert 0.0 <= keras3_row["recal"] <= 1.0 and 0.0 <= keras3_row["tflite"] <= 1.0
    assert (tmp_path / "out" / "resnet_qnets-keras3-W2A2.tflite").exists()
    assert (f"| qnets-keras3-W2A2 | 2/2 | {100 * keras3_row['init']:.2f}% "
            f"| {100 * keras3_row['keras']:.2f}% | {100 * keras3_row['recal']:.2f}% "
            f"| {100 * keras3_row['tflite']:.2f}% |") in text
    assert "- Keras 3 (JAX) against Keras 2, same float weights and recipe: W2A2 " in text


def test_speed_summary_reports_each_target_from_the_fastest_configuration():
    times = {("float", False): 0.100, ("float", True): 0.150, ("tfmot8", False): 0.120,
             ("tfmot8", True): 0.200, ("W3A2", False): 0.130, ("W3A2", True): 0.140,
             ("W3A3", False): 0.140, ("W3A3", True): 0.300, ("W3A8", False): 0.150,
             ("W3A8", True): 0.160}
    memory = {key: {"peak_mib": 100.0 if key[0] == "float" else 130.0, "rss_mib": 900.0,
                    "live_mib": {"float": 80.0, "tfmot8": 90.0}.get(key[0], 96.0),
                    "live_max_mib": 99.0, "live_xla_mib": 12.25}
              for key in times}
    text = train_speed.summary(times, memory)
    assert "W3A3 / float (fastest of each): 1.40 (target <= 1.3): not met" in text
    assert "W3A3 / tfmot 8-bit QAT (fastest of each): 1.17 (target <= 1.1): not met" in text
    assert "W3A8 / W3A2 (fastest of each): 1.15 (target <= 1.1): not met" in text
    assert "W3A3 / float peak live tensors (smallest of each): 1.20 (target <= 1.25): met" in text
    assert "W3A3 / float allocator peak (smallest of each): 1.30 (target <= 1.25): not met" in text
    assert "W3A3 / tfmot 8-bit QAT peak live tensors (smallest of each): 1.07" in text
    assert "of which 12.2 MiB are outputs of the quantizers' XLA kernels" in text
    table = train_speed.table(["float", "W3A3"], times, memory)
    assert "| W3A3 | False | 140 | 1.40 | 96 | 1.20 | 130 | 1.30 | 900 |" in table
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
    from tf_qnets.keras2.backend import keras

    model = train_speed.float_model(keras)
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



def test_fit_evaluate_modes_and_its_table_in_train_md(tmp_path):
    import fit_evaluate
    from tf_qnets.keras2.batch_norm import FrozenStatisticsBatchNormalization

    args = fit_evaluate.parse_args([])
    assert args.bits == [4, 2] and args.modes == ["frozen", "batch"] and args.learning_rate == 3e-4
    x = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    float_net = fit_evaluate.build_float_cnn()
    for mode, frozen, hard_from in (("frozen", True, 100.0), ("frozen-soft", True, None),
                                    ("batch", False, 100.0)):
        qat = fit_evaluate.quantize(float_net, 2, mode, (x, None))
        kinds = {type(layer) for layer in qat.layers if "bn" in layer.name}
        assert kinds == ({FrozenStatisticsBatchNormalization} if frozen
                         else {fit_evaluate.keras.layers.BatchNormalization}), mode
        hard = {q.hard_forward_from for _, _, _, q, _ in fit_evaluate.quantizer_states(qat)
                if isinstance(q, fit_evaluate.QNetsQuantizer)}
        assert hard == {hard_from}, mode
    row = {"bits": 2, "mode": "frozen", "initial": 0.5, "train": 0.8, "evaluate": 0.79,
           "recalibrated": 0.75, "seconds": 1.0}
    block = fit_evaluate.markdown([row], args, 0.9, 60.0)
    assert "| 2/2 | frozen | 50.00% | 80.00% | 79.00% | 75.00% |" in block
    # The committed docs/train.md holds the block the script replaces.
    text = open(os.path.join(ROOT, "docs", "train.md")).read()
    assert text.count("<!-- fit-evaluate:begin -->") == 1 and text.count("<!-- fit-evaluate:end -->") == 1
    copy = tmp_path / "train.md"
    copy.write_text(text)
    from markdown_block import replace_block
    replace_block(str(copy), "fit-evaluate", block)
    assert block in copy.read_text() and copy.read_text().count("fit-evaluate:begin") == 1


def test_accuracy_reuse_rows_keeps_the_methods_not_run_and_says_so(tmp_path):
    path = tmp_path / "benchmarks.md"
    args = accuracy.parse_args(["--epochs", "2", "--archs", "vgg", "--methods", "float",
                                "qkeras-W2A2", "--markdown", str(path)])
    old = [{"method": "float", "keras": 0.9253, "tflite": 0.9253, "bytes": 564828,
            "seconds_per_epoch": None, "note": ""},
           {"method": "qkeras-W2A2", "init": 0.2976, "keras": 0.9004, "tflite": None,
            "bytes": None, "seconds_per_epoch": 64.8, "note": "range [0, 2) won"}]
    accuracy.write_markdown(str(path), accuracy.markdown(old, args, None, 600.0))
    rerun = accuracy.parse_args(["--epochs", "2", "--archs", "vgg", "--methods", "float",
                                 "--reuse-rows", "--markdown", str(path)])
    reused = accuracy.previous_rows(str(path), rerun)
    assert [row["method"] for row in reused] == ["qkeras-W2A2"]
    assert reused[0]["keras"] == pytest.approx(0.9004) and reused[0]["init"] == pytest.approx(0.2976)
    new = [{"method": "float", "arch": "vgg", "keras": 0.9260, "tflite": 0.9260, "bytes": 564828,
            "seconds_per_epoch": None, "note": ""}]
    text = accuracy.markdown(accuracy._merge(new, reused), rerun, None, 60.0)
    assert "| float | 32/32 | - | 92.60% |" in text and "| qkeras-W2A2 | 2/2 | 29.76% | 90.04% |" in text
    assert "- qkeras-W2A2: range [0, 2) won; reused from the previous run of this table" in text
    assert "were not measured by this command" in text and "Partial" not in text
    accuracy.write_markdown(str(path), text)          # reused once more: the note says it once
    again = accuracy.previous_rows(str(path), rerun)
    assert again[0]["note"] == "range [0, 2) won; reused from the previous run of this table"


def test_export_zoo_runs_a_tiny_model_and_writes_its_table(tmp_path):
    import export_zoo

    path = tmp_path / "export.md"
    path.write_text("# Export\n")
    export_zoo.main(["--size", "32", "--models", "MobileNetV2", "--calibration", "8",
                     "--runs", "2", "--markdown", str(path)])
    text = path.read_text()
    assert "<!-- export-zoo:begin -->" in text and "| MobileNetV2 | 4/4 |" in text
    row = [line for line in text.splitlines() if line.startswith("| MobileNetV2")][0]
    # 34 of the 35 staircases aligned (the first layer's at least partly), no copies at A4,
    # none after an addition (no ReLU after MobileNetV2's Adds), no code tables (no swish)
    assert re.search(r"\| 3[45] / 0 / [01] / 0 / 0 / [01] \|", row), row
    # latency: file / float / PTQ; finer-input MULs: none by default (alpha 0.35: the
    # projections have 8 to 112 filters, under 128), 17 with finer_inputs=True (one per
    # projection); latency True / False; INT4
    assert re.search(r"\| [\d.]+ / [\d.]+ / [\d.]+ ms \| 0 / 17 \| [\d.]+ / [\d.]+ ms "
                     r"\| [\d.]+ MB, [\d.]+ ms \|$", row), row


def test_keras3_vs_keras2_parses_methods_orders_batches_and_writes_its_table():
    import tf_keras

    import keras3_vs_keras2 as bench

    assert bench.bits("W3A3") == (3, 3) and bench.bits("w2") == (2, None)
    with pytest.raises(SystemExit, match="W<bits>"):
        bench.bits("A3")
    x = np.arange(10, dtype="float32")[:, None]
    y = np.arange(10)
    batches = bench.epoch_batches(tf_keras, x, y, 4, seed=0)
    assert len(batches) == 3
    first = np.concatenate([batches[i][1] for i in range(len(batches))])
    batches.on_epoch_end()
    second = np.concatenate([batches[i][1] for i in range(len(batches))])
    assert sorted(first) == sorted(second) == list(range(10)) and list(first) != list(second)
    again = bench.epoch_batches(tf_keras, x, y, 4, seed=0)       # the same order every run
    assert list(np.concatenate([again[i][1] for i in range(3)])) == list(first)
    args = bench.parse_args(["--methods", "W3", "--subset", "100", "50", "--markdown", ""])
    row = {"initial": 0.5, "final": 0.75, "seconds_per_epoch": 2.0, "agreement": 0.995,
           "tflite": 0.749, "keras_hard": 0.75, "bytes": 1000}
    block = bench.markdown(args, "python benchmarks/keras3_vs_keras2.py", {
        "keras": "2.21.0", "float": 0.8, "rows": {"W3": row}}, {
        "keras": "3.15.1", "backend": "jax", "float": 0.8,
        "rows": {"W3": dict(row, final=0.7525, agreement=1.0, tflite=0.7525, keras_hard=0.7525,
                            bytes=990)}}, 60.0)
    assert block.startswith("<!-- keras3-vs-keras2:begin -->")
    assert block.endswith("<!-- keras3-vs-keras2:end -->")
    assert "| W3 | 50.00% | 75.00% | 50.00% | 75.25% | +0.25 pt | 2.0 / 2.0 |" in block
    assert "| W3 | 99.50% / 100.00% | -0.10 / +0.00 pt | 74.90% / 75.25% | 1000 / 990 |" in block
    no_export = bench.parse_args(["--methods", "W3", "--no-export", "--first-last", "int8"])
    assert no_export.first_last == "int8"
    assert "agreement" not in bench.markdown(no_export, "cmd", {
        "keras": "2.21.0", "float": 0.8, "rows": {"W3": row}}, {
        "keras": "3.15.1", "backend": "jax", "float": 0.8, "rows": {"W3": row}}, 60.0)


def test_keras3_train_speed_parses_configs_and_reports_ratios_and_verdicts(tmp_path, capsys):
    """The Keras 3 step-time benchmark's arguments, table and target lines (its timing runs in
    tests/keras3/test_k3_train_speed_benchmark.py under each backend)."""
    import keras3_train_speed as bench

    assert bench.parse_config("float") is None
    assert bench.parse_config("W3") == (3, None) and bench.parse_config("W3A8") == (3, 8)
    with pytest.raises(ValueError, match="'W<bits>A<bits>'"):
        bench.parse_config("W3Ax")
    args = bench.parse_args(["--configs", "W3A3,W3A2,W3A8", "--backends", "jax"])
    assert args.configs == "float,W3A3,W3A2,W3A8" and args.backends == ["jax"]
    for bad, message in ((["--backends", "torch"], "--backends: ['torch']; allowed: jax"),
                         (["--configs", "int8"], "--configs: configuration 'int8'"),
                         (["--steps", "0"], "--steps must be >= 1")):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)
        assert message in capsys.readouterr().err
    results = [{"backend": "jax", "keras": "3.x",
                "seconds": {"float": 0.100, "W3A2": 0.120, "W3A3": 0.160, "W3A8": 0.150}},
               {"backend": "tensorflow", "keras": "3.x",
                "seconds": {"float": 0.100, "W3A2": 0.110, "W3A3": 0.200, "W3A8": 0.150}}]
    names = ["float", "W3A2", "W3A3", "W3A8"]
    text = bench.report(results, names, args, "python benchmarks/keras3_train_speed.py", (0.5, 1.0))
    assert "| jax | W3A3 | 160.0 | 1.60 | - | - |" in text
    assert "| tensorflow | W3A3 | 200.0 | 2.00 | - | - |" in text
    results[1]["batch_seconds"] = {"float": 0.080, "W3A2": 0.090, "W3A3": 0.120, "W3A8": 0.100}
    assert "| tensorflow | W3A3 | 200.0 | 2.00 | 120.0 | 1.50 |" in bench.table(results, names)
    del results[1]["batch_seconds"]
    assert "- jax: W3A3 / float = 1.60 (target <= 1.5): not met" in text
    assert "- jax: W3A8 / W3A2 = 1.25 (target <= 1.2): not met" in text
    assert "- tensorflow: W3A8 / W3A2 = 1.36\n" in text          # no target for TensorFlow
    results[0]["seconds"]["W3A3"] = 0.140
    assert "W3A3 / float = 1.40 (target <= 1.5): met" in bench.verdicts(results)
    markdown = tmp_path / "benchmarks.md"
    markdown.write_text("# Benchmarks\n\nkept\n")
    import markdown_block

    markdown_block.replace_block(str(markdown), bench.BLOCK, text)
    markdown_block.replace_block(str(markdown), bench.BLOCK, text)
    written = markdown.read_text()
    assert "kept" in written and written.count(f"<!-- {bench.BLOCK}:begin -->") == 1


def test_keras3_train_speed_feeds_tensorflow_a_dataset_whose_autotuning_is_off():
    """Under TensorFlow the timed epochs read the same batches from a tf.data.Dataset with
    autotuning off (deleting an autotuned iterator can wait for the autotuner's next wake-up);
    under JAX, or when asked, fit gets the arrays."""
    import keras3_train_speed as bench

    x = np.arange(24, dtype=np.float32).reshape(6, 2, 2, 1)
    y = np.arange(6)
    data = bench.epoch_data(x, y, 4, "tensorflow")
    (dataset,), kwargs = data["args"], data["kwargs"]
    assert kwargs == {"shuffle": False} and dataset.options().autotune.enabled is False
    batches = [(bx.numpy(), by.numpy()) for bx, by in dataset]
    assert [len(by) for _, by in batches] == [4, 2]                   # in order, not shuffled
    np.testing.assert_array_equal(np.concatenate([bx for bx, _ in batches]), x)
    np.testing.assert_array_equal(np.concatenate([by for _, by in batches]), y)
    for backend, autotune in (("jax", False), ("tensorflow", True)):
        data = bench.epoch_data(x, y, 4, backend, tf_data_autotune=autotune)
        assert data["args"][0] is x and data["args"][1] is y
        assert data["kwargs"] == {"batch_size": 4, "shuffle": False}
    assert bench.parse_args(["--tf-data-autotune"]).tf_data_autotune
    assert not bench.parse_args([]).tf_data_autotune


def test_train_speed_measures_keras3_configurations_in_the_same_run(monkeypatch, capsys):
    """train_speed.py's Keras 3 part: its settings, one keras3_train_speed process per backend,
    and the subsection it adds (the timing itself: tests/keras3/test_k3_train_speed_benchmark.py)."""
    import keras3_train_speed

    parser = argparse.ArgumentParser()
    defaults = argparse.Namespace(keras3_backends="jax,tensorflow", keras3_configs="float,W3A3,W3A8",
                                  keras3_rounds=7, temperature=10.0)
    keras3_args = train_speed.keras3_arguments(defaults, parser)
    assert keras3_args.backends == ["jax", "tensorflow"] and keras3_args.configs == "float,W3A3,W3A8"
    assert (keras3_args.batch_size, keras3_args.rounds) == (train_speed.BATCH, 7)
    assert train_speed.keras3_arguments(argparse.Namespace(**{**vars(defaults), "keras3_backends": ""}),
                                        parser) is None
    with pytest.raises(SystemExit):
        train_speed.keras3_arguments(
            argparse.Namespace(**{**vars(defaults), "keras3_backends": "torch"}), parser)
    assert "--keras3-backends/--keras3-configs" in capsys.readouterr().err
    asked = []

    def fake_run_backend(backend, args):
        asked.append((backend, args.configs))
        return {"backend": backend, "keras": "3.x",
                "seconds": {"float": 0.1, "W3A3": 0.13, "W3A8": 0.14}}

    monkeypatch.setattr(keras3_train_speed, "run_backend", fake_run_backend)
    text = train_speed.measure_keras3(keras3_args)
    assert asked == [("jax", "float,W3A3,W3A8"), ("tensorflow", "float,W3A3,W3A8")]
    assert text.startswith("### Keras 3 (keras 3.x), same model and batch")
    assert "| jax | W3A3 | 130.0 | 1.30 |" in text and "| tensorflow | W3A8 | 140.0 | 1.40 |" in text
    assert "- jax: W3A3 / float = 1.30 (target <= 1.5): met" in text
    assert train_speed.measure_keras3(None) is None


def test_flip_origins_probes_cut_models_and_can_leave_the_margins_out(monkeypatch, tmp_path):
    import flip_origins
    import tf_qnets
    import tf_qnets.core.bias_lattice as bias_lattice
    from test_finer_input import _model

    data = np.random.default_rng(0).uniform(0, 1, (32, 16, 16, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(_model(), w_bits=3, a_bits=3, calibration_data=data,
                                  first_last="int8", verbose=0)
    assert flip_origins.probed_layers(qat, 8) == ["quant_stem_relu", "quant_relu"]
    assert flip_origins.probed_layers(qat, 1) == ["quant_stem_relu"]
    count, total, images = flip_origins.flips(qat, "quant_relu", data, data, str(tmp_path))
    assert total == 32 * 16 * 16 * 16 and count == 0 and images == set()
    monkeypatch.setattr(bias_lattice, "bias_lattices", bias_lattice.bias_lattices)  # restored after
    flip_origins.without_margins()
    rows = bias_lattice.bias_lattices(tf_qnets.keras2.describe_network.describe_network(qat))
    assert rows and all(row.output_step is None for row in rows)


def test_fit_teardown_times_both_feeds_and_reports_the_wait_after_the_last_batch(capsys):
    """benchmarks/fit_teardown.py: the two feeds, a real (tiny) timing of each, the table."""
    import tensorflow as tf
    import tf_keras as keras

    import fit_teardown

    x = np.random.default_rng(0).random((8, 4), dtype=np.float32)
    y = np.arange(8) % 2
    args, kwargs = fit_teardown.feed("arrays", x, y, 4)
    assert args == (x, y) and kwargs == {"batch_size": 4, "shuffle": False}
    (dataset,), kwargs = fit_teardown.feed("dataset, autotune off", x, y, 4)
    assert kwargs == {} and dataset.options().autotune.enabled is False
    assert [len(b) for _, b in dataset] == [4, 4]
    with pytest.raises(ValueError, match="feed must be one of"):
        fit_teardown.feed("generator", x, y, 4)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    lines = []
    results = fit_teardown.time_fits(model, x, y, 4, epochs=1, fits=1, log=lines.append)
    assert set(results) == set(fit_teardown.FEEDS) and len(lines) == 2
    for runs in results.values():
        (whole, after), = runs
        assert 0 <= after < whole
    text = fit_teardown.report({"arrays": [(1.31, 0.5), (0.8, 0.0), (1.3, 0.4)],
                                "dataset, autotune off": [(0.8, 0.0), (0.9, 0.01), (0.7, 0.0)]},
                               "python benchmarks/fit_teardown.py", f"TensorFlow {tf.__version__}")
    assert "| arrays | 1.30 / 1.31 s | 0.40 / 0.50 s |" in text
    assert "| dataset, autotune off | 0.80 / 0.90 s | 0.00 / 0.01 s |" in text
    assert fit_teardown.parse_args(["--fits", "2"]).fits == 2
    with pytest.raises(SystemExit):
        fit_teardown.parse_args(["--samples", "0"])
    assert "--samples must be >= 1" in capsys.readouterr().err


def test_first_step_times_float_and_quantized_fits_and_writes_its_table(monkeypatch, tmp_path):
    import export_zoo
    import first_step
    from tf_qnets.keras2.backend import keras

    def tiny(name, size, classes=1000, classifier_activation="softmax"):
        inputs = keras.Input((size, size, 3))
        h = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(inputs)
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(h))

    monkeypatch.setattr(export_zoo, "build", tiny)
    args = first_step.parse_args(["--batch", "4", "--batches", "3", "--bits", "W2A2"])
    float_times = first_step.measure("MobileNetV2", "float", args)
    quantized = first_step.measure("MobileNetV2", "W2A2", args)
    assert float_times["quantize_s"] == 0.0 and quantized["quantize_s"] > 0.0
    for times in (float_times, quantized):
        assert times["first_s"] > times["later_s"] > 0.0
    with pytest.raises(SystemExit):
        first_step.parse_args(["--batches", "1"])

    path = tmp_path / "train.md"
    path.write_text("# Train\n\n<!-- first-step:begin -->\nold\n<!-- first-step:end -->\n")
    monkeypatch.setattr(first_step, "run_alone",
                        lambda name, kind, args: float_times if kind == "float" else quantized)
    first_step.main(["--models", "EfficientNetB0", "--bits", "W2A2", "--markdown", str(path)])
    text = path.read_text()
    assert "old" not in text and "Command: `python benchmarks/first_step.py --models" in text
    row = [line for line in text.splitlines() if line.startswith("| EfficientNetB0")][0]
    assert re.fullmatch(r"\| EfficientNetB0 \| [\d.]+ s / \d+ ms \| [\d.]+ s \| [\d.]+ s / \d+ ms \|",
                        row), row

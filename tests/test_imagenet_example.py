"""examples/imagenet_resnet18.py: the paper's recipe, and a few steps end to end on
tensorflow-datasets' mock ``imagenet2012`` (random images of random sizes, 1000 classes)."""

import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "imagenet_resnet18.py"
TINY = ["--mock-data", "8", "--image-size", "32", "--base-width", "4", "--batch-size", "4",
        "--epochs", "2", "--steps-per-epoch", "2", "--validation-steps", "1"]


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("imagenet_resnet18", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_are_the_papers_resnet18_recipe(example):
    args = example.parse_args([])
    assert (args.w_bits, args.a_bits, args.epochs, args.learning_rate) == (3, None, 55, 1e-3)
    assert example.PAPER["momentum"] == 0.9 and example.PAPER["clip_norm"] == 5.0
    assert example.PAPER["temperature_base"] == 5.0


def test_learning_rate_drops_tenfold_at_epochs_30_and_45(example):
    rates = [example.learning_rate_at(epoch) for epoch in range(55)]
    assert rates[:30] == [1e-3] * 30
    np.testing.assert_allclose(rates[30:45], [1e-4] * 15, rtol=1e-12)
    np.testing.assert_allclose(rates[45:], [1e-5] * 10, rtol=1e-12)


def test_resnet18_has_the_reference_parameter_count(example):
    """11,689,512 trainable parameters: torchvision's resnet18 (same layers) for 1000 classes."""
    model = example.build_resnet18()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 11_689_512
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert len(convs) == 1 + 16 + 3  # stem, 8 blocks x 2, 3 downsampling shortcuts


def test_bad_arguments_are_rejected_by_name(example):
    with pytest.raises(SystemExit):
        example.parse_args(["--strategy", "tpu"])
    with pytest.raises(SystemExit):
        example.parse_args(["--batch-size", "0"])


def test_strategy_one_is_the_default_strategy(example):
    from tf_qnets.tf.distribute import strategy_from_name

    assert strategy_from_name("one") is example.tf.distribute.get_strategy()


def test_a_few_steps_end_to_end_on_mock_imagenet(example, tmp_path):
    """MirroredStrategy over this process's one CPU device; whole-model XLA (auto: on)."""
    strategy = "mirrored"
    results = example.main(TINY + ["--strategy", strategy, "--output-dir", str(tmp_path)])
    assert results["replicas"] == 1 and results["jit_compile"] is True
    # W3 everywhere but the float stem conv and classifier: 16 block convs + 3 shortcuts.
    assert results["quantizers"] == 19
    assert results["temperature"] == [5.0, 10.0]
    np.testing.assert_allclose(results["learning_rate"], [1e-3, 1e-3])
    assert len(results["val_accuracy"]) == 2
    assert os.path.exists(results["model"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["strategy"] == strategy


def test_multiworker_without_tf_config_explains_what_is_missing(example, monkeypatch):
    from tf_qnets.tf.distribute import strategy_from_name

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        strategy_from_name("multiworker")
    with pytest.raises(SystemExit, match="TF_CONFIG"):
        example.main(["--strategy", "multiworker"])

"""QuantizerTensorBoard on Keras 3 models: event files TensorBoard reads, with no TensorFlow."""

import glob
import os

import keras
import numpy as np
import pytest
from keras import ops

import tf_qnets
from conftest import build_cnn, classification_data
from tf_qnets.core.event_file import read_scalars
from tf_qnets.core.quantizer_logs import saturation
from tf_qnets.keras3 import QNetsWrapper


def _scalars(folder):
    files = glob.glob(os.path.join(str(folder), "quantizers", "events.out.tfevents.*"))
    assert len(files) == 1
    return read_scalars(files[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One fit (two epochs of three batches) logged by two callbacks: one per epoch (the
    default) and one every second optimizer step, each into its own folder. Returns the
    model and ``{"epoch": scalars, "per_batch": scalars}``."""
    keras.utils.set_random_seed(0)
    folders = {"epoch": tmp_path_factory.mktemp("per_epoch"),
               "per_batch": tmp_path_factory.mktemp("per_batch")}
    x, y = classification_data((8, 8, 2), 4, samples=48)
    qat = tf_qnets.quantize_model(build_cnn(), 3, 3, calibration_data=x, verbose=0)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=True)
    boards = [tf_qnets.QuantizerTensorBoard(str(folders["epoch"]), data=x[:16]),
              tf_qnets.QuantizerTensorBoard(str(folders["per_batch"]), data=x[:16],
                                            update_freq=2)]
    qat.fit(x, y, epochs=2, batch_size=16, verbose=0,
            callbacks=[tf_qnets.TemperatureScheduler()] + boards)
    return qat, {name: _scalars(folder) for name, folder in folders.items()}


def test_every_quantizer_logs_temperature_alpha_beta_and_saturation(trained):
    qat, scalars = trained[0], trained[1]["epoch"]
    wrappers = [layer for layer in qat.layers if isinstance(layer, QNetsWrapper)]
    expected_keys = set()
    for wrapper in wrappers:
        if wrapper.weight_quantizer is not None:
            kind = ("depthwise_kernel" if isinstance(wrapper.layer, keras.layers.DepthwiseConv2D)
                    else "kernel")
            expected_keys.add(f"{wrapper.layer.name}/{kind}")
        if wrapper.output_quantizer is not None:
            expected_keys.add(f"{wrapper.layer.name}/output")
    by_tag = {}
    for tag, step, value in scalars:
        by_tag.setdefault(tag, []).append((step, value))
    for name in ("temperature", "alpha", "beta", "saturation"):
        assert {tag.split("/", 1)[1] for tag in by_tag if tag.startswith(name + "/")} == expected_keys
    # T = 50, 100 (base "auto" with 2 epochs), logged at the end of epochs 0 and 1
    for tag, points in by_tag.items():
        assert [step for step, _ in points] == [0, 1]
        if tag.startswith("temperature/"):
            assert [value for _, value in points] == [50.0, 100.0]
        if tag.startswith("saturation/"):
            assert all(0.0 <= value <= 1.0 for _, value in points)
    # the last values are the model's (float32 in the file)
    for wrapper in wrappers:
        quantizer = wrapper.weight_quantizer
        if quantizer is None:
            continue
        kind = "depthwise_kernel" if isinstance(wrapper.layer, keras.layers.DepthwiseConv2D) else "kernel"
        key = f"{wrapper.layer.name}/{kind}"
        alpha = float(ops.convert_to_numpy(quantizer.alpha))
        assert by_tag[f"alpha/{key}"][-1][1] == pytest.approx(alpha, rel=1e-6)
        expected = saturation(ops.convert_to_numpy(wrapper.layer.kernel),
                              float(ops.convert_to_numpy(quantizer.beta)),
                              ops.convert_to_numpy(quantizer.thresholds), 100.0)
        assert by_tag[f"saturation/{key}"][-1][1] == pytest.approx(expected, abs=1e-6)


def test_activation_saturation_rises_with_the_temperature(trained):
    scalars = trained[1]["epoch"]
    first, last = {}, {}
    for tag, step, value in scalars:
        if tag.startswith("saturation/") and tag.endswith("/output"):
            (first if step == 0 else last)[tag] = value
    assert first and first.keys() == last.keys()
    assert sum(last.values()) > sum(first.values())


def test_per_batch_logging_uses_the_optimizer_step(trained):
    scalars = trained[1]["per_batch"]
    steps = sorted({step for tag, step, _ in scalars if tag.startswith("temperature/")})
    assert steps == [2, 4, 6]          # 3 batches per epoch, 2 epochs: steps 1..6


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="`log_dir`"):
        tf_qnets.QuantizerTensorBoard(3)
    with pytest.raises(ValueError, match="`update_freq`"):
        tf_qnets.QuantizerTensorBoard("logs", update_freq=0)
    with pytest.raises(TypeError, match="`data`"):
        tf_qnets.QuantizerTensorBoard("logs", data=np.array(["a", "b"]))


def test_a_model_without_quantizers_is_refused(tmp_path):
    x, y = classification_data((8, 8, 2), 4, samples=16)
    model = build_cnn()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="no tf_qnets quantizers"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[tf_qnets.QuantizerTensorBoard(str(tmp_path))])

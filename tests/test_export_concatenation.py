"""A concatenation of staircases (Inception-style branches) exports exactly.

Each branch ends in a ReLU staircase read only by the ``Concatenate``; the Keras model rounds
the concatenation to its int8 range, and the file must keep each staircase on its own grid
before it requantizes to that range (:mod:`tf_qnets.export.rewrites.concatenation`).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402
from tf_qnets.export import export_tflite  # noqa: E402

from conftest import cut_export_offset  # noqa: E402


def branches():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 3))
    stem = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    a = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="a")(stem)
    a = keras.layers.ReLU(name="a_relu")(keras.layers.BatchNormalization(name="a_bn")(a))
    b = keras.layers.Conv2D(6, 1, use_bias=False, name="b")(stem)
    b = keras.layers.ReLU(name="b_relu")(keras.layers.BatchNormalization(name="b_bn")(b))
    x = keras.layers.Concatenate(name="concat")([a, b])
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="after")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


@pytest.fixture(scope="module")
def qat():
    x = (np.random.default_rng(0).integers(0, 256, (48, 12, 12, 3)) / 255.0).astype("float32")
    return tf_qnets.quantize_model(branches(), w_bits=4, a_bits=4, calibration_data=x,
                                   first_last="int8", verbose=0), x


@pytest.mark.parametrize("layer_name", ["quant_concat", "quant_after"])
def test_the_file_computes_the_keras_values_up_to(qat, layer_name, tmp_path):
    model, x = qat
    images = (np.random.default_rng(5).integers(0, 256, (128, 12, 12, 3)) / 255.0).astype("float32")
    largest, _ = cut_export_offset(model, layer_name, x[:16], images, str(tmp_path / "cut.tflite"))
    assert largest < 0.25
    report = export_tflite(model, str(tmp_path / "whole.tflite"), x[:16])
    assert {"quant_a_relu", "quant_b_relu"} <= set(report.staircases["aligned"])

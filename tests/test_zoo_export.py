"""keras.applications networks quantize and export (issue: export the networks people deploy).

Tiny inputs (32x32) and random weights: these tests pin that the path works and how each
staircase is lowered, not accuracy (benchmarks/ measure that on real data).
"""

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras
from tf_qnets.core.bias_lattice import bias_lattices
from tf_qnets.export import export_tflite
from tf_qnets.keras2.describe_network import describe_network

from conftest import cut_export_offset


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3)).astype("float32")


def test_mobilenet_v2_exports_with_folded_depthwise_bn(images, tmp_path):
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                           classes=10)
    qat = tf_qnets.quantize_model(model, w_bits=4, a_bits=4, calibration_data=images,
                                  first_last="int8", verbose=0)
    report = export_tflite(qat, str(tmp_path / "mobilenet_v2.tflite"), images[:16])
    counts = {name: count for name, _, count in report.ops}
    assert counts["DEPTHWISE_CONV_2D"] == 17
    # int8 kernels (codes k * level where that helps): every ReLU6 staircase is computed by
    # its kernel layer's own requantization and aligned there, the expand convs after a linear
    # bottleneck (a calibrated int8 tensor) included; the first layer's 4-bit staircase is
    # aligned where it can be (no 15 copies)
    staircases = report.staircases
    assert sum(len(names) for names in staircases.values()) == 35
    assert len(staircases["aligned"]) >= 34 and staircases["copies"] == []
    assert all(name == "quant_Conv1_relu"
               for name in staircases["partial"] + staircases["rounded"])
    assert report.reference_exact > 0.8
    # no op between a kernel layer and its staircase: kernels, the bottleneck Adds, the head
    kernels = sum(type(layer).__name__ in ("Conv2D", "Dense") for layer in model.layers)
    assert counts["CONV_2D"] == kernels and "MINIMUM" not in counts
    # and no requantizing MUL before the 17 linear projection convs: at alpha 0.35 they do 8
    # to 112 multiply-adds per value they read, under the 128 for which finer_inputs="auto"
    # re-stores the staircase finer (tests/test_finer_input.py)
    assert "MUL" not in counts
    assert report.size_bytes < 0.45 * report.float_size_bytes   # int8 weights, small-model overhead
    # the file rounds the int32 biases of those 17 projections, and of the first layer's
    # channels that no alignment fits; quantize_model left exactly those on the file's
    # lattice (tf_qnets.core.bias_lattice), so the file reports none off it
    lattices = bias_lattices(describe_network(qat))
    assert sorted(row.layer for row in lattices) == sorted(
        ["quant_Conv1"] + [f"quant_block_{i}_project" for i in range(1, 17)]
        + ["quant_expanded_conv_project"])
    assert report.off_lattice == [] and tf_qnets.snap_biases(qat).moved == []


def test_efficientnet_b0_decides_every_swish_and_sigmoid_on_int8_codes(images, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=10)
    qat = tf_qnets.quantize_model(model, w_bits=4, a_bits=4, calibration_data=images,
                                  first_last="int8", verbose=0)
    # the squeeze-and-excitation convolutions' swish and sigmoid moved onto layers of their own
    assert qat.get_layer("quant_block2a_se_reduce").layer.activation.__name__ == "linear"
    assert qat.get_layer("quant_block2a_se_expand_activation").layer.activation.__name__ == \
        "sigmoid"
    path = str(tmp_path / "efficientnet_b0.tflite")
    report = export_tflite(qat, path, images[:16])
    # all 65 staircases (33 swish activations, 16 + 16 in squeeze-and-excitation) are tables of
    # their int8 input's codes; no LOGISTIC op is left, and every bias is on its lattice
    assert len(report.staircases["table"]) == 65
    assert sum(len(names) for names in report.staircases.values()) == 65
    counts = {name: count for name, _, count in report.ops}
    assert "LOGISTIC" not in counts and report.off_lattice == []
    # the squeeze-and-excitation Reshape is one RESHAPE to a constant shape (no SHAPE, PACK:
    # a dynamic tensor that XNNPACK would not take), and the identity Normalization (weights=None)
    # is no op, so the stem convolution's bias unit is fixed by the pixel scaling before it
    assert "SHAPE" not in counts and "PACK" not in counts
    assert "quant_stem_conv" in [row.layer for row in bias_lattices(describe_network(qat))]
    # the file computes the Keras model's values through the first blocks (random weights
    # amplify the rare int8 rounding ties of a residual Add further on; the trained network's
    # agreement is measured by benchmarks/export_zoo.py --train, docs/export.md)
    fresh = np.random.default_rng(9).integers(0, 256, (8, 32, 32, 3)).astype("float32")
    _, off = cut_export_offset(qat, "quant_block2a_project_bn", images[:16], fresh,
                               str(tmp_path / "cut.tflite"))
    assert off == 0.0

"""keras.applications networks quantize and export (issue: export the networks people deploy).

Tiny inputs (32x32) and random weights: these tests pin that the path works and how each
staircase is lowered, not accuracy (benchmarks/ measure that on real data).
"""

import numpy as np
import pytest

import tf_qnets
from tf_qnets._keras import keras
from tf_qnets.export import export_tflite


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
    # every depthwise ReLU6 staircase is exact by alignment (int8 depthwise kernels); the first
    # layer's 4-bit staircase is aligned where it can be (no 15 copies); the 1x1 convs after a
    # linear bottleneck (a calibrated int8 tensor) are reported as rounded
    assert len(report.staircases["aligned"]) == 17
    assert report.staircases["copies"] == []
    assert all(name.endswith(("expand_relu", "out_relu", "Conv1_relu"))
               for name in report.staircases["rounded"] + report.staircases["partial"])
    assert report.size_bytes < 0.35 * report.float_size_bytes

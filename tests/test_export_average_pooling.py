"""An average pooling the file stores in int8 (DenseNet's transitions) rounds its mean once.

DenseNet's transition ``BN -> ReLU -> 1x1 conv -> AveragePooling2D(2)`` feeds the next dense
block's ``BN -> ReLU`` and its ``Concatenate``. ``quantize_model`` gives the pooling an int8
output range, so the Keras model rounds the mean to int8 as the file must; the export computes
the pooling as a depthwise convolution whose requantization is that one rounding
(:mod:`tf_qnets.export.rewrites.average_pooling`). TFLite's own ``AVERAGE_POOL_2D`` would
round the mean to its input's grid first: before, 4.7% of the next staircase's codes differed
from Keras on this network.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.export.describe import describe  # noqa: E402
from tf_qnets.export.plan import make_plan  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402
from tf_qnets.runtime import load_interpreter  # noqa: E402

from conftest import cut_export_offset, vary_batch_norms  # noqa: E402


def densenet_like(padding="valid", pool=2):
    """A dense block of two 3x3 convolutions, a transition with a ``pool`` x ``pool`` pooling
    (stride ``pool``, or 1 with ``padding="same"`` and an odd pool), one more dense layer; BN
    factors of various sizes."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for i in range(2):
        y = keras.layers.BatchNormalization(name=f"b{i}_bn")(x)
        y = keras.layers.ReLU(name=f"b{i}_relu")(y)
        y = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name=f"b{i}_conv")(y)
        x = keras.layers.Concatenate(name=f"b{i}_concat")([x, y])
    x = keras.layers.BatchNormalization(name="t_bn")(x)
    x = keras.layers.ReLU(name="t_relu")(x)
    x = keras.layers.Conv2D(8, 1, use_bias=False, name="t_conv")(x)
    strides = 1 if padding == "same" and pool % 2 else pool
    x = keras.layers.AveragePooling2D(pool, strides=strides, padding=padding, name="t_pool")(x)
    y = keras.layers.BatchNormalization(name="c_bn")(x)
    y = keras.layers.ReLU(name="c_relu")(y)
    y = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="c_conv")(y)
    x = keras.layers.Concatenate(name="c_concat")([x, y])
    x = keras.layers.BatchNormalization(name="post_bn")(x)
    x = keras.layers.ReLU(name="post_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
    return vary_batch_norms(model)


@pytest.fixture(scope="module")
def net():
    x = (np.random.default_rng(0).integers(0, 256, (48, 16, 16, 3)) / 255.0).astype("float32")
    qat = tf_qnets.quantize_model(densenet_like(), w_bits=4, a_bits=4, calibration_data=x,
                                  first_last="int8", verbose=0)
    return qat, x


def test_the_transition_pooling_gets_an_int8_output_and_becomes_a_depthwise_conv(net):
    qat, _ = net
    plan = make_plan(describe(qat)[0])
    assert plan.outputs["quant_t_pool"][0] == "int8"
    assert plan.node_by_name["quant_t_pool"].layer.class_name == "DepthwiseConv2D"
    assert plan.claims["quant_t_pool"].name == "kernels"


def test_the_file_has_no_average_pool_op(net, tmp_path):
    qat, x = net
    path = str(tmp_path / "dense.tflite")
    report = tf_qnets.export_tflite(qat, path, x, verify_data=x)
    ops = {op["op_name"] for op in load_interpreter(path)._get_ops_details()}  # noqa: SLF001
    assert "AVERAGE_POOL_2D" not in ops and "DEPTHWISE_CONV_2D" in ops
    assert report.verification.agreement == 1.0


@pytest.mark.parametrize("layer", ["quant_b0_concat", "quant_t_conv", "quant_t_pool",
                                   "quant_c_relu", "quant_c_concat", "quant_post_relu"])
def test_every_value_after_the_transition_matches_keras(net, layer, tmp_path):
    qat, x = net
    largest, share = cut_export_offset(qat, layer, x, x, str(tmp_path / "cut.tflite"))
    assert share == 0.0 and largest < 0.01, (layer, largest, share)


def _quantized(model):
    x = (np.random.default_rng(0).integers(0, 256, (48, 16, 16, 3)) / 255.0).astype("float32")
    return tf_qnets.quantize_model(model, w_bits=4, a_bits=4, calibration_data=x,
                                   first_last="int8", verbose=0), x


def test_same_padding_that_pads_nothing_is_a_depthwise_conv_too(tmp_path):
    qat, x = _quantized(densenet_like("same"))      # 16x16, 2x2 windows, stride 2: no padding
    plan = make_plan(describe(qat)[0])
    assert plan.node_by_name["quant_t_pool"].layer.class_name == "DepthwiseConv2D"
    largest, share = cut_export_offset(qat, "quant_c_relu", x, x, str(tmp_path / "cut.tflite"))
    assert share == 0.0


def test_a_pooling_past_the_border_keeps_tflites_op(tmp_path):
    """A 3x3 ``same`` pooling divides its border windows by 4 or 6: no depthwise form, so
    ``quantize_model`` gives it no range of its own and the file keeps AVERAGE_POOL_2D."""
    qat, x = _quantized(densenet_like("same", pool=3))
    plan = make_plan(describe(qat)[0])
    assert "t_pool" in plan.node_by_name and "t_pool" not in plan.outputs
    path = str(tmp_path / "same.tflite")
    tf_qnets.export_tflite(qat, path, x)
    ops = {op["op_name"] for op in load_interpreter(path)._get_ops_details()}  # noqa: SLF001
    assert "AVERAGE_POOL_2D" in ops

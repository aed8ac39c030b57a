"""MobileNetV3's hard-swish and squeeze-and-excitation blocks export exactly.

The block: the network's own pixel scaling ``Rescaling(1 / 127.5, offset=-1)``,
``x = BN(conv(.))``, ``h = x * relu6(x + 3) / 6`` (tf_keras writes ``x + 3`` and
``* (1 / 6)`` as TFOpLambda layers), a depthwise convolution, squeeze-and-excitation
(``GlobalAveragePooling2D(keepdims=True)``, a 1x1 convolution and ReLU, a 1x1 convolution,
the same hard sigmoid, ``Multiply``) and a projection. What is pinned down: the Keras model
rounds the scaled pixels and each product to int8 as the file does (``Rescaling`` and
``Multiply`` get an int8 output quantizer; the scaled pixels' range keeps them off rounding
ties);
the staircase on ``relu6(x + 3)`` is the ADD's own requantization; ``* (1 / 6)`` keeps the
staircase's codes; the squeeze-and-excitation pooling is an int8 tensor (MEAN) that Keras
rounds too, and the ReLU after its convolution is that convolution's requantization; and
every one of those staircases gives the Keras codes in the file.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402
from tf_qnets.keras2.describe_network import describe_network  # noqa: E402
from tf_qnets.export import export_tflite  # noqa: E402
from tf_qnets.export.describe import describe  # noqa: E402
from tf_qnets.export.plan import make_plan  # noqa: E402
from tf_qnets.keras2.int8 import Int8OutputQuantizer  # noqa: E402

from conftest import cut_export_offset  # noqa: E402


def hard_sigmoid(x, name):
    return keras.layers.ReLU(6.0, name=name)(x + 3.0) * (1.0 / 6.0)


def mobilenet_v3_block():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Multiply(name="stem_hswish")([x, hard_sigmoid(x, "stem_gate")])
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.ReLU(name="dw_relu")(x)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    s = keras.layers.Conv2D(4, 1, name="se_reduce")(s)
    s = keras.layers.ReLU(name="se_relu")(s)
    s = keras.layers.Conv2D(8, 1, name="se_expand")(s)
    x = keras.layers.Multiply(name="se_mul")([x, hard_sigmoid(s, "se_gate")])
    x = keras.layers.Conv2D(6, 1, use_bias=False, name="project")(x)
    x = keras.layers.BatchNormalization(name="project_bn")(x)
    x = keras.layers.ReLU(name="project_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
    rng = np.random.default_rng(1)
    for layer in model.layers:   # BN statistics of both signs and several scales
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma * rng.uniform(0.5, 2.0, gamma.shape), beta + 0.2,
                               mean + 0.05, var * 2.0])
    return model


def pixels(n, seed):
    """8-bit RGB pixel values, as MobileNetV3 takes them."""
    return np.random.default_rng(seed).integers(0, 256, (n, 12, 12, 3)).astype("float32")


@pytest.fixture(scope="module")
def block():
    x = pixels(48, seed=0)
    qat = tf_qnets.quantize_model(mobilenet_v3_block(), w_bits=4, a_bits=4, calibration_data=x,
                                  first_last="int8", verbose=0)
    return qat, x


def test_tf_op_lambda_arithmetic_is_described_as_an_operation_with_its_constant(block):
    qat, _ = block
    nodes = {node.layer.name: node.layer for node in describe_network(qat).nodes}
    adds = [layer for layer in nodes.values() if layer.class_name == "op.Add"]
    scales = [layer for layer in nodes.values() if layer.class_name == "op.Multiply"]
    assert len(adds) == 2 and len(scales) == 2
    assert all(layer.config["arguments"] == [["tensor", 0], ["constant", 3.0]] for layer in adds)
    assert all(layer.config["arguments"][1][1] == pytest.approx(1.0 / 6.0) for layer in scales)


def test_products_get_the_int8_output_the_file_stores(block):
    qat, _ = block
    for name in ("rescaling", "stem_hswish", "se_mul"):
        layer = qat.get_layer(f"quant_{name}")
        assert isinstance(layer.quantize_config.get_output_quantizers(layer.layer)[0],
                          Int8OutputQuantizer), name


def test_hard_sigmoid_staircases_are_the_add_requantization_and_keep_their_codes(block):
    qat, _ = block
    claims = {name: rewrite.name for name, rewrite in make_plan(describe(qat)[0]).claims.items()}
    gates = [name for name in claims if name.startswith("quant_") and name.endswith("_gate")]
    assert sorted(gates) == ["quant_se_gate", "quant_stem_gate"]
    assert all(claims[name] == "add staircase" for name in gates)
    assert sorted(name for name, rewrite in claims.items() if rewrite == "constant scale") == [
        "tf.math.multiply", "tf.math.multiply_1"]
    # the squeeze-and-excitation pooling is an int8 MEAN (Keras rounds it too): its 1x1
    # convolution's ReLU staircase is aligned on that convolution's own accumulator
    assert claims["quant_se_reduce"] == "aligned staircase"
    assert make_plan(describe(qat)[0]).outputs["quant_se_pool"][0] == "int8"


@pytest.mark.parametrize("layer_name", [
    "quant_rescaling", "quant_stem_bn", "quant_stem_gate", "tf.math.multiply", "quant_stem_hswish", "quant_dw_relu", "quant_se_relu",
    "quant_se_gate", "quant_se_mul", "quant_project_relu"])
def test_every_value_up_to_the_layer_is_the_keras_value_in_the_file(block, layer_name, tmp_path):
    # the stem gate reads the int8 BN output that the Keras model rounds in float32 as the
    # file does in integers; every later value is an exact integer result or one rounding
    # that Keras makes too
    qat, x = block
    images = pixels(128, seed=5)
    _, off = cut_export_offset(qat, layer_name, x[:16], images, str(tmp_path / "cut.tflite"))
    assert off == 0.0


def test_the_report_counts_the_add_staircases_apart(block, tmp_path):
    qat, x = block
    report = export_tflite(qat, str(tmp_path / "block.tflite"), x[:16])
    assert report.staircases["sum"] == ["quant_stem_gate", "quant_se_gate"]
    assert "quant_dw_relu" in report.staircases["aligned"]

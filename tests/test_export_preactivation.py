"""Pre-activation networks (ResNetV2, DenseNet) export exactly.

Their ``BatchNormalization -> ReLU`` reads a residual ``Add`` or a ``Concatenate``, so no
kernel layer before it absorbs the BN. The export computes it as a 1x1 depthwise convolution
(:mod:`tf_qnets.export.rewrites.batch_norm_depthwise`) whose requantization is the staircase;
the Keras model rounds the ``Add`` and the ``Concatenate`` to int8 as the file does.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402
from tf_qnets.export import export_tflite  # noqa: E402
from tf_qnets.export.describe import describe  # noqa: E402
from tf_qnets.export.plan import make_plan  # noqa: E402

from conftest import cut_export_offset, vary_batch_norms  # noqa: E402


def preactivation_net():
    keras.utils.set_random_seed(11)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    r = keras.layers.BatchNormalization(name="pre_bn")(x)
    r = keras.layers.ReLU(name="pre_relu")(r)
    r = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(r)
    r = keras.layers.BatchNormalization(name="bn1")(r)
    r = keras.layers.ReLU(name="relu1")(r)
    r = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(r)
    x = keras.layers.Add(name="add")([x, r])
    d = keras.layers.BatchNormalization(name="dense_bn")(x)
    d = keras.layers.ReLU(name="dense_relu")(d)
    d = keras.layers.Conv2D(4, 3, padding="same", name="grow")(d)
    x = keras.layers.Concatenate(name="concat")([x, d])
    x = keras.layers.BatchNormalization(name="post_bn")(x)
    x = keras.layers.ReLU(name="post_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
    return vary_batch_norms(model, signs=True)   # per-channel factors of both signs


@pytest.fixture(scope="module")
def net():
    x = (np.random.default_rng(0).integers(0, 256, (48, 12, 12, 3)) / 255.0).astype("float32")
    qat = tf_qnets.quantize_model(preactivation_net(), w_bits=4, a_bits=4, calibration_data=x,
                                  first_last="int8", verbose=0)
    return qat, x


def test_unfolded_batch_norms_before_a_staircase_become_aligned_depthwise_layers(net):
    qat, _ = net
    plan = make_plan(describe(qat)[0])
    for name in ("pre_bn", "dense_bn", "post_bn"):
        assert plan.node_by_name[name].layer.class_name == "DepthwiseConv2D", name
        assert plan.claims[name].name == "aligned staircase", name
    assert plan.node_by_name["bn1"].layer.class_name == "BatchNormalization"  # folded into conv1


def test_the_concatenation_gets_the_int8_output_the_file_stores(net):
    qat, _ = net
    assert plan_outputs(qat)["quant_concat"][0] == "int8"


def plan_outputs(qat):
    return make_plan(describe(qat)[0]).outputs


def test_every_staircase_of_the_network_is_aligned(net, tmp_path):
    qat, x = net
    report = export_tflite(qat, str(tmp_path / "net.tflite"), x[:16])
    assert report.staircases["aligned"] == ["quant_pre_relu", "quant_relu1", "quant_dense_relu",
                                            "quant_post_relu"]


# (cut after pre_relu, the stem's output has no other reader: the BN folds into the stem)
@pytest.mark.parametrize("layer_name", ["quant_add", "quant_dense_relu", "quant_concat",
                                        "quant_post_relu"])
def test_the_file_computes_the_keras_values_up_to(net, layer_name, tmp_path):
    qat, x = net
    images = (np.random.default_rng(5).integers(0, 256, (128, 12, 12, 3)) / 255.0).astype("float32")
    largest, _ = cut_export_offset(qat, layer_name, x[:16], images, str(tmp_path / "cut.tflite"))
    assert largest < 0.25

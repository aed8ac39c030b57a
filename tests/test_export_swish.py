"""EfficientNet's swish and squeeze-and-excitation blocks export exactly.

The block: a convolution, BN and ``Activation("swish")``, a depthwise convolution, BN and swish,
squeeze-and-excitation written as EfficientNet writes it (``GlobalAveragePooling2D``, a 1x1
``Conv2D(activation="swish")``, a 1x1 ``Conv2D(activation="sigmoid")``, ``Multiply``), a
projection with BN, and a head. What is pinned down: ``quantize_model`` moves the two
squeeze-and-excitation activations onto ``Activation`` layers of their own (the same
function: the user's model keeps its layers); every swish/sigmoid staircase then reads an
int8 tensor that the Keras model rounds as the file does (the BN or the linear convolution
before it gets an 8-bit output quantizer), and the file computes each staircase as a table
of those 256 codes: every value up to each staircase is the Keras value in the file.
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
from tf_qnets.export.rewrites.code_staircase import table_jumps  # noqa: E402
from tf_qnets.keras2.int8 import Int8OutputQuantizer  # noqa: E402

from conftest import cut_export_offset, vary_batch_norms  # noqa: E402

STAIRCASES = ["quant_stem_swish", "quant_dw_swish", "quant_se_reduce_activation",
              "quant_se_expand_activation", "quant_project_swish"]


def efficientnet_block():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("swish", name="stem_swish")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.Activation("swish", name="dw_swish")(x)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    s = keras.layers.Conv2D(4, 1, activation="swish", name="se_reduce")(s)
    s = keras.layers.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
    x = keras.layers.Multiply(name="se_mul")([x, s])
    x = keras.layers.Conv2D(6, 1, use_bias=False, name="project")(x)
    x = keras.layers.BatchNormalization(name="project_bn")(x)
    x = keras.layers.Activation("swish", name="project_swish")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
    vary_batch_norms(model, signs=True)
    return model


def images(n, seed):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, 12, 12, 3)).astype("float32")


@pytest.fixture(scope="module")
def block():
    model = efficientnet_block()
    x = images(48, seed=0)
    qat = tf_qnets.quantize_model(model, w_bits=4, a_bits=4, calibration_data=x,
                                  first_last="int8", verbose=0)
    return model, qat, x


def test_kernel_activations_move_onto_layers_of_their_own(block):
    model, qat, x = block
    # the user's model keeps its layers
    assert model.get_layer("se_reduce").activation.__name__ == "swish"
    assert "se_reduce_activation" not in [layer.name for layer in model.layers]
    assert qat.get_layer("quant_se_reduce").layer.activation.__name__ == "linear"
    assert qat.get_layer("quant_se_expand_activation").layer.activation.__name__ == "sigmoid"
    # and the split network computes the same function (float weights, before quantizing)
    from tf_qnets.keras2.split_activation import split_kernel_activations

    split = split_kernel_activations(model, {"se_reduce": "se_reduce_activation",
                                             "se_expand": "se_expand_activation"})
    np.testing.assert_array_equal(split(x[:8]).numpy(), model(x[:8]).numpy())


def test_the_pre_activations_get_the_int8_output_the_file_stores(block):
    _, qat, _ = block
    for name in ("stem_bn", "dw_bn", "se_reduce", "se_expand", "project_bn"):
        layer = qat.get_layer(f"quant_{name}")
        assert isinstance(layer.quantize_config.get_output_quantizers(layer.layer)[0],
                          Int8OutputQuantizer), name


def test_every_staircase_is_a_table_of_its_input_codes(block, tmp_path):
    _, qat, x = block
    claims = {name: rewrite.name for name, rewrite in make_plan(describe(qat)[0]).claims.items()}
    assert all(claims[name] == "code staircase" for name in STAIRCASES)
    report = export_tflite(qat, str(tmp_path / "block.tflite"), x[:16])
    assert report.staircases["table"] == STAIRCASES
    assert report.staircases["rounded"] == [] and not report.off_lattice
    assert "LOGISTIC" not in [op for op, _, _ in report.inspection.ops]   # no swish or sigmoid op


@pytest.mark.parametrize("layer_name", STAIRCASES + ["quant_se_mul", "quant_logits"])
def test_every_value_up_to_the_layer_is_the_keras_value_in_the_file(block, layer_name, tmp_path):
    _, qat, x = block
    _, off = cut_export_offset(qat, layer_name, x[:16], images(128, seed=5),
                               str(tmp_path / "cut.tflite"))
    assert off == 0.0


def test_a_table_steps_down_where_swish_dips_below_zero():
    assert table_jumps([0, 0, -1, -1, 0, 2, 2, 3]) == [(2, -1), (4, 1), (5, 2), (7, 1)]
    assert table_jumps([1, 1, 1]) == []


def test_relu_activations_are_not_split_and_excluded_layers_stay_as_they_are():
    from tf_qnets.core.plan import LayerInfo, split_activations, split_per_layer

    infos = [LayerInfo("a", "Conv2D", "swish", has_weights=True),
             LayerInfo("a_activation", "Activation", "relu"),
             LayerInfo("r", "Conv2D", "relu", has_weights=True),
             LayerInfo("e", "Dense", "gelu", has_weights=True),
             LayerInfo("out", "Dense", "sigmoid", has_weights=True, is_model_output=True)]
    assert split_activations(infos, a_bits=4) == {"a": "a_activation_1", "e": "e_activation"}
    assert split_activations(infos, a_bits=4, exclude=["e"]) == {"a": "a_activation_1"}
    assert split_activations(infos, a_bits=4, per_layer={"a": None}) == {"e": "e_activation"}
    assert split_activations(infos, a_bits=None) == {}
    assert split_activations(infos, a_bits=None, per_layer={"a": {"a_bits": 2}}) == {
        "a": "a_activation_1"}
    moved = split_per_layer({"a": {"a_bits": 2, "w_bits": 2}}, {"a": "a_activation_1"})
    assert moved == {"a": {"a_bits": 2, "w_bits": 2}, "a_activation_1": {"a_bits": 2}}

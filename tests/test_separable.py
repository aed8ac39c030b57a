"""SeparableConv2D (Xception, NASNet): split into DepthwiseConv2D -> Conv2D, both quantized, exact file.

Before, ``quantize_model`` kept a ``SeparableConv2D`` float with a "no quantizer" warning and
``export_tflite`` refused the model ("these layers block an all-integer file").
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.core.plan import LayerInfo  # noqa: E402
from tf_qnets.core.separable import separable_per_layer, separable_splits  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402
from tf_qnets.keras2.quantizer import QNetsQuantizer  # noqa: E402
from tf_qnets.keras2.split_separable import split_separable_convolutions  # noqa: E402


def separable_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.SeparableConv2D(8, 3, padding="same", use_bias=False, name="sep1")(x)
    y = keras.layers.BatchNormalization(name="sep1_bn")(y)
    y = keras.layers.ReLU(name="sep1_relu")(y)
    y = keras.layers.SeparableConv2D(8, 3, padding="same", depth_multiplier=2,
                                     activation="relu", name="sep2")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(x))


def _images(count, seed):
    return np.random.default_rng(seed).uniform(0, 1, (count, 12, 12, 3)).astype(np.float32)


def test_the_split_computes_the_separable_layer():
    model = separable_model()
    for layer in model.layers:       # weights of every size, BN statistics included
        if layer.weights:
            layer.set_weights([np.abs(np.random.default_rng(1).normal(size=w.shape)).astype("f")
                               for w in layer.get_weights()])
    split = split_separable_convolutions(model, {"sep1": "sep1_depthwise", "sep2": "sep2_dw"})
    assert type(split.get_layer("sep2_dw")).__name__ == "DepthwiseConv2D"
    assert split.get_layer("sep2_dw").depth_multiplier == 2
    assert type(split.get_layer("sep2")).__name__ == "Conv2D"
    assert split.get_layer("sep2").activation.__name__ == "relu"
    assert type(model.get_layer("sep2")).__name__ == "SeparableConv2D"     # the user's, untouched
    x = _images(4, 0)
    expected = model(x).numpy()
    np.testing.assert_allclose(split(x).numpy(), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


def test_splits_skip_excluded_layers_and_find_free_names():
    infos = [LayerInfo("a", "SeparableConv2D"), LayerInfo("a_depthwise", "Conv2D"),
             LayerInfo("b", "SeparableConv2D"), LayerInfo("c", "SeparableConv2D")]
    splits = separable_splits(infos, per_layer={"c": None}, exclude=["b"])
    assert splits == {"a": "a_depthwise_1"}
    assert separable_per_layer({"a": {"w_bits": 2}}, splits) == {
        "a": {"w_bits": 2}, "a_depthwise_1": {"w_bits": 2}}


def test_both_parts_are_quantized_and_the_file_agrees(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qat = tf_qnets.quantize_model(separable_model(), w_bits=4, a_bits=4, first_last="int8",
                                      per_layer={"sep2": {"w_bits": 3}},
                                      calibration_data=_images(32, 1), verbose=0)
    assert not any("no quantizer" in str(w.message) for w in caught)
    low_bit = {layer.name: quantizer.levels for layer in qat.layers
               for _, quantizer, _ in getattr(layer, "_weight_vars", ())
               if isinstance(quantizer, QNetsQuantizer)}
    assert len(low_bit["quant_sep1_depthwise"].levels) == len(low_bit["quant_sep1"].levels) == 15
    assert len(low_bit["quant_sep2_depthwise"].levels) == len(low_bit["quant_sep2"].levels) == 7
    report = tf_qnets.export_tflite(qat, str(tmp_path / "m.tflite"), _images(32, 1),
                                    verify_data=_images(64, 2))
    ops = {name: count for name, _, count in report.ops}
    assert ops.get("DEPTHWISE_CONV_2D") == 2 and ops.get("CONV_2D", 0) >= 3, report.ops
    assert report.verification.agreement == 1.0, report.verification


def test_an_excluded_separable_layer_stays_and_export_names_it(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qat = tf_qnets.quantize_model(separable_model(), w_bits=4, a_bits=4, exclude=["sep1"],
                                      calibration_data=_images(16, 1), verbose=0)
    assert type(qat.get_layer("sep1")).__name__ == "SeparableConv2D"
    with pytest.raises(Exception, match="sep1"):
        tf_qnets.export_tflite(qat, str(tmp_path / "m.tflite"), _images(16, 1))

"""EfficientNet's ImageNet front: Rescaling -> Normalization -> a per-channel multiply, exact.

``keras.applications.EfficientNet*(weights="imagenet")`` scales pixels by 1/255, normalizes
them with the ImageNet mean and variance (a ``Normalization`` holding them in variables) and
multiplies by ``1 / sqrt(std)`` per channel (``tf.math.multiply``, a TFOpLambda). Pinned here:

* the QAT model computes the Normalization with its statistics (tfmot assigns the variables
  without letting the layer refresh the mean and variance it derives from them);
* the multiply becomes a ``Rescaling`` of the same name, which rounds to int8 as the file does;
* the Normalization's mean is on the file's int32 lattice (``tf_qnets.core.normalization_lattice``),
  also where the user's layer holds it as a constant (EfficientNetV2);
* the file computes both as 1x1 depthwise convolutions and agrees with the Keras model.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.core.network import Int8Range  # noqa: E402
from tf_qnets.core.normalization_lattice import normalization_factors, offset_unit  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402
from tf_qnets.keras2.operator_layers import operator_layers, replace_operator_layers  # noqa: E402
from tf_qnets.keras2.describe_network import describe_network  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def imagenet_front_model(multiply=True, constant=False):
    """The front of EfficientNet as ``weights="imagenet"`` builds it (statistics loaded into the
    Normalization's variables, as its weight file does), then a small CNN; ``constant``: the
    statistics given to the Normalization as constants (EfficientNetV2's front)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    if constant:
        norm = keras.layers.Normalization(mean=list(MEAN), variance=list(STD ** 2), name="norm")
    else:
        norm = keras.layers.Normalization(axis=-1, name="norm")
    x = norm(x)
    if multiply:
        x = tf.math.multiply(x, tf.reshape(1.0 / np.sqrt(STD), [1, 1, 1, 3]))
    x = keras.layers.ZeroPadding2D(1, name="pad")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("swish", name="stem_act")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="out")(x))
    if not constant:
        norm.set_weights([MEAN, STD ** 2, np.array(0, np.int64)])
    return model


def _images(count, seed):
    low = np.random.default_rng(seed).uniform(0, 255, (count, 4, 4, 3)).astype(np.float32)
    return tf.image.resize(low, (12, 12)).numpy()


def _quantized(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf_qnets.quantize_model(model, w_bits=4, a_bits=4, first_last="int8",
                                       calibration_data=_images(32, 1), verbose=0)


def _layer(qat, name):
    return [layer for layer in qat.layers if layer.name in (name, f"quant_{name}")][0]


def test_the_per_channel_multiply_becomes_a_rescaling_of_the_same_name():
    model = imagenet_front_model()
    found = operator_layers(model)
    assert list(found) == ["tf.math.multiply"]
    class_name, config = found["tf.math.multiply"]
    assert class_name == "Rescaling"
    np.testing.assert_allclose(config["scale"], 1.0 / np.sqrt(STD), rtol=1e-6)
    rebuilt = replace_operator_layers(model, found)
    assert type(rebuilt.get_layer("tf.math.multiply")).__name__ == "Rescaling"
    assert "tf.math.multiply" in [layer.name for layer in model.layers]   # the user's, untouched
    assert type(model.get_layer("tf.math.multiply")).__name__ == "TFOpLambda"
    x = _images(4, 0)
    np.testing.assert_allclose(rebuilt(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)


def test_scalar_multiplies_and_sequential_models_are_left_alone():
    inputs = keras.Input((4, 4, 3))
    x = tf.math.multiply(inputs, 0.5)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))
    assert operator_layers(model) == {}
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert replace_operator_layers(sequential, {"anything": ("Add", {})}) is sequential


def test_the_qat_model_normalizes_with_the_statistics_it_holds():
    """Before the fix the quantized model's Normalization computed ``x`` itself (mean 0 and
    variance 1 from its build), ignoring the ImageNet statistics in its variables."""
    model = imagenet_front_model()
    qat = _quantized(model)
    x = _images(8, 2)
    norm = _layer(qat, "norm")
    float_norm = keras.Model(model.inputs, model.get_layer("norm").output)(x).numpy()
    quantized_norm = keras.Model(qat.inputs, norm.output)(x).numpy()
    step = (float_norm.max() - float_norm.min()) / 255
    assert float_norm.min() < -1.5          # normalized, not pixels in [0, 1]
    assert np.abs(quantized_norm - float_norm).max() <= step


def test_the_mean_is_on_the_lattice_of_the_files_bias():
    qat = _quantized(imagenet_front_model())
    network = describe_network(qat)
    rescale = network.node_by_name["quant_rescale"].layer.output_quantizer
    norm = network.node_by_name["quant_norm"].layer
    assert isinstance(norm.output_quantizer, Int8Range)
    input_scale = (float(rescale.hi) - float(rescale.lo)) / 255.0
    _, offset = normalization_factors(norm.weights["mean"], norm.weights["variance"])
    units = offset / offset_unit(norm.weights["variance"], input_scale)
    assert np.abs(units - np.round(units)).max() < 1e-3
    assert np.abs(np.asarray(norm.weights["mean"]) - MEAN).max() <= input_scale / 254 + 1e-7


@pytest.mark.parametrize("multiply,constant", [(True, False), (False, False), (False, True)])
def test_the_file_computes_the_front_as_depthwise_convolutions_and_agrees(tmp_path, multiply,
                                                                           constant):
    """``constant``: ``quantize_model`` moves the statistics into variables (the user's layer
    keeps its constants), so the mean can be snapped as well."""
    model = imagenet_front_model(multiply, constant)
    qat = _quantized(model)
    if constant:
        assert model.get_layer("norm").weights == []
        assert {"mean", "variance"} <= {w.name.split("/")[-1].split(":")[0]
                                        for w in _layer(qat, "norm").layer.weights}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = tf_qnets.export_tflite(qat, str(tmp_path / "m.tflite"), _images(32, 1),
                                        verify_data=_images(64, 3))
    ops = {name: count for name, _, count in report.ops}
    assert ops.get("DEPTHWISE_CONV_2D") == (2 if multiply else 1), report.ops
    assert not any("Normalization with per-channel" in str(w.message) for w in caught)
    assert report.off_lattice == []
    assert report.verification.agreement == 1.0, report.verification
    assert report.verification.max_abs_diff < 1e-3, report.verification

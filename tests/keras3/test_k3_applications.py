"""keras.applications networks through tf_qnets.quantize_model on Keras 3 (small inputs).

MobileNetV2 (ReLU6, depthwise convolutions, inverted residual Adds, ZeroPadding2D) and
ResNet50 (bottleneck residual blocks, 49 ReLUs): every kernel layer but the first and last
gets a weight quantizer, every ReLU an activation quantizer, and the inference forward
gives each activation quantizer's output exactly ``alpha`` times a 4-bit level.
"""

import keras
import numpy as np
import pytest
from keras import ops

import tf_qnets
from tf_qnets.keras3 import QNetsWrapper

KERNEL_LAYERS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def _is_relu(layer):
    if isinstance(layer, keras.layers.ReLU):
        return True
    return (isinstance(layer, keras.layers.Activation)
            and getattr(layer.activation, "__name__", "") == "relu")


APPLICATIONS = {
    "MobileNetV2": lambda: keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10),
    "ResNet50": lambda: keras.applications.ResNet50(
        input_shape=(32, 32, 3), weights=None, classes=10),
}


def _names():
    """Both networks under TensorFlow; MobileNetV2 only under JAX, whose eager calibration
    compiles every operation per shape (ResNet50: 54 s there, 12 s under TensorFlow). The code
    path is the same on both backends."""
    if keras.backend.backend() == "jax":
        return ["MobileNetV2"]
    return sorted(APPLICATIONS)


@pytest.mark.parametrize("name", _names())
def test_application_quantizes_with_every_layer_covered_and_hard_levels(name):
    model = APPLICATIONS[name]()
    x = np.random.default_rng(0).uniform(0.0, 255.0, (8, 32, 32, 3)).astype("float32")
    qat = tf_qnets.quantize_model(model, 4, 4, calibration_data=x, verbose=0)

    kernel_layers = [layer for layer in model.layers if isinstance(layer, KERNEL_LAYERS)]
    relus = [layer for layer in model.layers if _is_relu(layer)]
    assert tf_qnets.count_quantizers(qat, "weights") == len(kernel_layers) - 2
    assert tf_qnets.count_quantizers(qat, "activations") == len(relus)
    for layer in (kernel_layers[0], kernel_layers[-1]):
        assert not isinstance(qat.get_layer(layer.name), QNetsWrapper) or \
            qat.get_layer(layer.name).weight_quantizer is None

    wrappers = [qat.get_layer(layer.name) for layer in relus]
    probe = keras.Model(qat.inputs, [wrapper.output for wrapper in wrappers] + qat.outputs)
    *activations, probabilities = probe(x, training=False)
    probabilities = ops.convert_to_numpy(probabilities)
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4)
    for wrapper, values in zip(wrappers, activations):
        alpha = float(ops.convert_to_numpy(wrapper.output_quantizer.alpha))
        codes = ops.convert_to_numpy(values) / alpha
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-3,
                                   err_msg=f"{wrapper.name}: not on the staircase")
        assert codes.min() >= -1e-3 and codes.max() <= 15 + 1e-3, wrapper.name
        assert len(np.unique(np.round(codes))) > 1, f"{wrapper.name}: one level only"

"""What the exporter needs to know about a Keras layer: its class, activation, quantizers.

Layers of a :func:`tf_qnets.quantize_model` result are either plain Keras layers or a
:class:`tf_qnets.keras2.wrapper.QNetsWrapper` around one; every helper here looks through the wrapper.
"""

import numpy as np

from tf_qnets.keras2.backend import keras
from tf_qnets.core.weight_codes import bn_fold_factors as _fold_factors
from tf_qnets.keras2.int8 import Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.keras2.wrapper import QNetsWrapper

__all__ = ["inner", "layer_class", "is_linear", "is_plain_relu", "relu_cap", "affine_factors",
           "bn_fold_factors", "check_int8_quantizer", "quantizers"]


def inner(layer):
    """The Keras layer itself (inside a QNetsWrapper, if wrapped)."""
    return layer.layer if isinstance(layer, QNetsWrapper) else layer


def layer_class(layer):
    """Class name of the (unwrapped) layer."""
    return type(inner(layer)).__name__


def is_linear(layer):
    """True when the layer has no activation or a linear one."""
    activation = getattr(inner(layer), "activation", None)
    return activation is None or activation is keras.activations.linear or getattr(
        activation, "__name__", "") == "linear"


def is_plain_relu(layer):
    """A ``ReLU()`` layer (no slope, cap or threshold) or ``Activation("relu")``."""
    return relu_cap(layer) == (True, None)


def relu_cap(layer):
    """``(True, cap)`` for a ``ReLU`` layer without slope or threshold (``cap``: its
    ``max_value`` or None) or ``Activation("relu"/"relu6")``; ``(False, None)`` otherwise."""
    keras_layer = inner(layer)
    if type(keras_layer).__name__ == "ReLU":
        if getattr(keras_layer, "negative_slope", 0) or getattr(keras_layer, "threshold", 0):
            return False, None
        cap = getattr(keras_layer, "max_value", None)
        return True, (None if cap is None else float(cap))
    if type(keras_layer).__name__ == "Activation":
        name = getattr(keras_layer.activation, "__name__", "")
        if name in ("relu", "relu6"):
            return True, (6.0 if name == "relu6" else None)
    return False, None


def bn_fold_factors(bn_layer):
    """``(g, shift)`` with ``BN(z) = g * z + shift`` per channel, from a BatchNormalization
    layer's inference statistics (``tf_qnets.core.weight_codes.bn_fold_factors``)."""
    weights = {w.name.split("/")[-1].split(":")[0]: w.numpy() for w in bn_layer.weights}
    return _fold_factors(weights["moving_mean"], weights["moving_variance"], bn_layer.epsilon,
                         weights.get("gamma"), weights.get("beta"))


def affine_factors(layer):
    """``(scale, offset)`` arrays with ``layer(x) = x * scale + offset`` (inference), or None."""
    cls = type(layer).__name__
    if isinstance(layer, keras.layers.BatchNormalization):   # FrozenStatistics... included
        axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
        rank = len(layer.input_shape)
        if len(np.atleast_1d(layer.axis)) != 1 or axis not in (-1, rank - 1):
            return None
        g, shift = bn_fold_factors(layer)
        return g.astype(np.float32), shift.astype(np.float32)
    if cls == "Rescaling":
        return (np.asarray(layer.scale, np.float32), np.asarray(layer.offset, np.float32))
    if cls == "Normalization":
        if getattr(layer, "invert", False):
            return None
        mean = np.asarray(layer.mean, np.float64)
        std = np.maximum(np.sqrt(np.asarray(layer.variance, np.float64)), keras.backend.epsilon())
        return ((1.0 / std).astype(np.float32), (-mean / std).astype(np.float32))
    return None


def check_int8_quantizer(layer, quantizer, variables, role):
    """Raise unless ``quantizer`` is an 8-bit min/max quantizer (tf_qnets' int8 ones or tfmot's
    LastValue / MovingAverage), the only kinds besides the staircase that export can lower."""
    known = isinstance(quantizer, (Int8WeightQuantizer, Int8OutputQuantizer)) or type(
        quantizer).__name__ in ("LastValueQuantizer", "MovingAverageQuantizer")
    bits = getattr(quantizer, "num_bits", 8)
    if not known or bits != 8 or not {"min_var", "max_var"} <= set(variables or {}):
        raise ValueError(
            f"Layer {layer.name!r}: its {role} quantizer {type(quantizer).__name__} "
            f"({bits} bits) cannot be exported; export_tflite lowers tf_qnets staircases and "
            "8-bit min/max quantizers (tf_qnets int8, tfmot LastValue/MovingAverage). Quantize "
            "the layer with tf_qnets (per_layer=...) or leave it float (exclude=...).")


def quantizers(layer):
    """``(weight quantizer, its variables, output quantizer, its variables)`` of one layer."""
    if not isinstance(layer, QNetsWrapper):
        return None, None, None, None
    weight_q = weight_v = output_q = output_v = None
    for role, _, quantizer, variables in layer.quantizer_states():
        if role == "weights":
            weight_q, weight_v = quantizer, variables
        else:
            output_q, output_v = quantizer, variables
    return weight_q, weight_v, output_q, output_v

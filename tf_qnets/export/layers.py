"""What the exporter reads from a described layer (:class:`tf_qnets.core.network.LayerDescription`).

Plain functions of the description: its class, whether it is linear or a (capped) ReLU, its
BatchNormalization fold factors, the affine map of an unfolded BatchNormalization,
Rescaling or Normalization. Nothing here touches a Keras object: the description is the
same for a Keras 2 model and a Keras 3 model on any backend.
"""

import numpy as np

from tf_qnets.core.network import channel_axis, is_linear, relu_cap
from tf_qnets.core.normalization_lattice import normalization_factors
from tf_qnets.core.weight_codes import layer_fold_factors as bn_fold_factors

__all__ = ["layer_class", "is_linear", "is_plain_relu", "relu_cap", "affine_factors",
           "bn_fold_factors", "channel_axis", "output_quantizer", "scalar_operation"]


def layer_class(layer):
    """Class name of the described layer (inside tf_qnets' wrapper, if it was wrapped)."""
    return layer.class_name


def scalar_operation(layer):
    """``(operation, constant)`` for a described ``keras.ops`` call (class ``"op.<Name>"``) of
    one tensor and one scalar constant with the tensor first (``x + 3.0``: ``("Add", 3.0)``;
    ``x * c`` or ``c * x``: ``("Multiply", c)``), else None."""
    if not layer.class_name.startswith("op."):
        return None
    arguments = layer.config.get("arguments", ())
    kinds = [kind for kind, _ in arguments]
    if sorted(kinds) != ["constant", "tensor"]:
        return None
    operation = layer.class_name[len("op."):]
    constant = float(arguments[kinds.index("constant")][1])
    if kinds[0] == "constant" and operation not in ("Add", "Multiply"):
        return None   # c - x, c / x: not an operation of x with a constant on its right
    return operation, constant


def is_plain_relu(layer):
    """A ``ReLU()`` layer (no slope, cap or threshold) or ``Activation("relu")``."""
    return relu_cap(layer) == (True, None)


def _normalization_statistics(layer):
    weights, config = layer.weights, layer.config
    mean = weights.get("mean", config.get("mean"))
    variance = weights.get("variance", config.get("variance"))
    if mean is None or variance is None:
        return None
    return np.asarray(mean, np.float64).reshape(-1), np.asarray(variance, np.float64).reshape(-1)


def affine_factors(layer):
    """``(scale, offset)`` arrays with ``layer(x) = x * scale + offset`` (inference), or None."""
    cls = layer.class_name
    if cls == "BatchNormalization":
        if channel_axis(layer) != -1:
            return None
        g, shift = bn_fold_factors(layer)
        return g.astype(np.float32), shift.astype(np.float32)
    if cls == "Rescaling":
        return (np.asarray(layer.config.get("scale", 1.0), np.float32),
                np.asarray(layer.config.get("offset", 0.0), np.float32))
    if cls == "Normalization":
        statistics = _normalization_statistics(layer)
        if layer.config.get("invert", False) or statistics is None:
            return None
        scale, offset = normalization_factors(*statistics)
        return scale.astype(np.float32), offset.astype(np.float32)
    return None



"""The one table of layer kinds: what tf_qnets does with each Keras layer class.

Keyed by the Keras class name, which is the same in Keras 2 (``tf_keras``) and Keras 3, so
both paths, the summary and the exporter read the same answer.

* ``KERNEL_ATTRIBUTES``: layers whose kernel tf_qnets quantizes, and the attribute that
  holds it.
* Activations: ``NONNEGATIVE_ACTIVATIONS`` get unsigned level sets ``{0..2^b - 1}``;
  ``UNQUANTIZED_ACTIVATIONS`` get no activation quantizer; any other activation function,
  and the ``SIGNED_ACTIVATION_LAYERS``, get signed sets.
* ``FLOAT_LAYERS_WITH_WEIGHTS``: layers with weights that stay float on purpose (their
  weights are folded or kept at export), without the "no quantizer" warning.
* ``INFERENCE_IDENTITIES``: the identity at inference (dropout, noise, regularisers).
* ``VALUE_PRESERVING``: every output value is one of the input values or a padding zero,
  so the input's precision carries through (the summary's bit accounting).
* ``SCALE_KEEPING``: int8 TFLite computes these on the input's scale and zero point (the
  value-preserving layers and average pooling): the exporter gives them no range of their own.
"""

import numpy as np

__all__ = [
    "is_identity_of",
    "weight_named",
    "pads_border_of",
    "pooling_pads_border",
    "pooling_window",
    "FLOAT_LAYERS_WITH_WEIGHTS",
    "INFERENCE_IDENTITIES",
    "KERNEL_ATTRIBUTES",
    "NONNEGATIVE_ACTIVATIONS",
    "SCALE_KEEPING",
    "SIGNED_ACTIVATION_LAYERS",
    "UNQUANTIZED_ACTIVATIONS",
    "VALUE_PRESERVING",
    "output_kind",
]

KERNEL_ATTRIBUTES = {
    "Conv1D": "kernel",
    "Conv2D": "kernel",
    "Dense": "kernel",
    "DepthwiseConv2D": "depthwise_kernel",
}

NONNEGATIVE_ACTIVATIONS = frozenset({"relu", "relu6", "sigmoid", "hard_sigmoid", "softplus"})
UNQUANTIZED_ACTIVATIONS = frozenset({"linear", "softmax", "log_softmax", None})
SIGNED_ACTIVATION_LAYERS = frozenset({"LeakyReLU", "ELU", "PReLU"})
FLOAT_LAYERS_WITH_WEIGHTS = frozenset({"BatchNormalization", "LayerNormalization", "Normalization"})

INFERENCE_IDENTITIES = frozenset({
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
    "GaussianNoise", "AlphaDropout", "ActivityRegularization",
})
VALUE_PRESERVING = INFERENCE_IDENTITIES | frozenset({
    "Flatten", "Reshape", "Permute", "RepeatVector",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Cropping1D", "Cropping2D", "Cropping3D",
})
SCALE_KEEPING = VALUE_PRESERVING | frozenset({"AveragePooling1D", "AveragePooling2D"})


def output_kind(kind, activation=None, negative_slope=0.0):
    """``None`` (no activation quantizer), ``"unsigned"`` or ``"signed"`` for a layer.

    ``kind``: the Keras class name; ``activation``: the name of its activation function
    (kernel layers and ``Activation``); ``negative_slope``: a ``ReLU`` layer's slope.

    >>> output_kind("Conv2D", "relu"), output_kind("Dense", "linear"), output_kind("ELU")
    ('unsigned', None, 'signed')
    """
    if kind in KERNEL_ATTRIBUTES or kind == "Activation":
        if activation in UNQUANTIZED_ACTIVATIONS:
            return None
        return "unsigned" if activation in NONNEGATIVE_ACTIVATIONS else "signed"
    if kind == "ReLU":
        return "signed" if float(negative_slope or 0.0) > 0 else "unsigned"
    if kind in SIGNED_ACTIVATION_LAYERS:
        return "signed"
    return None


def _pair(value):
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),) * 2


def pooling_window(config):
    """``(pool_size, strides)`` of a 2-D pooling's Keras ``config`` as integer pairs (strides
    default to the pool size)."""
    pool = _pair(config.get("pool_size", (2, 2)))
    return pool, _pair(config.get("strides") or pool)


def pooling_pads_border(config, input_shape):
    """True when a 2-D pooling (``config``: its Keras config; ``input_shape``: with the batch
    axis, channels last) averages windows that reach past the input border (``padding="same"``
    with padding needed, or an unknown spatial size): such a window is divided by the number
    of its elements inside the input, which no convolution reproduces.

    >>> pooling_pads_border({"pool_size": (2, 2), "strides": (2, 2), "padding": "same"}, (None, 8, 8, 3))
    False
    >>> pooling_pads_border({"pool_size": (3, 3), "strides": (1, 1), "padding": "same"}, (None, 8, 8, 3))
    True
    """
    if str(config.get("padding", "valid")).lower() == "valid":
        return False
    pool, strides = pooling_window(config)
    for size, window, stride in zip(tuple(input_shape)[1:3], pool, strides):
        if size is None:
            return True
        out = -(-int(size) // stride)
        if (out - 1) * stride + window - int(size) > 0:
            return True
    return False


def pads_border_of(layer):
    """:func:`pooling_pads_border` of a built Keras layer (either Keras: its class name,
    ``get_config()`` and ``input.shape``); False for a layer that is not an average pooling."""
    if not type(layer).__name__.startswith("AveragePooling"):
        return False
    try:
        shape = layer.input.shape
    except (AttributeError, ValueError):
        return True
    return pooling_pads_border(layer.get_config(), tuple(shape))


def weight_named(layer, name):
    """The weight of a built Keras layer (either Keras) whose short name is ``name`` (``mean``
    for ``normalization/mean:0``), else the layer's attribute of that name, else None."""
    for weight in getattr(layer, "weights", ()):
        short = weight.name.split("/")[-1].split(":")[0]
        if short == name:
            return weight
    return getattr(layer, name, None)


def is_identity_of(layer):
    """True for a built Keras layer (either Keras) that computes its input itself: a
    ``Normalization`` with mean 0 and variance 1, as ``keras.applications`` builds it with
    ``weights=None`` (``(x - 0) / sqrt(1) = x``). ``quantize_model`` gives it no int8 output
    and the exporter emits nothing for it."""
    if type(layer).__name__ != "Normalization" or getattr(layer, "invert", False):
        return False
    mean, variance = weight_named(layer, "mean"), weight_named(layer, "variance")
    if mean is None or variance is None:
        return False
    mean, variance = np.asarray(mean), np.asarray(variance)
    return bool(np.all(mean == 0.0) and np.all(variance == 1.0))

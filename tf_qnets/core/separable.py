"""A ``SeparableConv2D`` as the ``DepthwiseConv2D`` and 1x1 ``Conv2D`` it computes.

``SeparableConv2D(filters, k, depth_multiplier=d)`` is, exactly,

    y = f(P * (D (*) x) + b),

a depthwise convolution ``D`` (``k x k``, ``d`` outputs per input channel, no bias) followed
by a pointwise 1x1 convolution ``P`` with the bias ``b`` and the activation ``f``. Neither
Kerases' layer exposes the two kernels to a quantizer, and TFLite has no separable op (the
converter emits the two convolutions anyway). ``quantize_model`` splits each such layer into
``DepthwiseConv2D(name="<name>_depthwise") -> Conv2D(name="<name>")`` (the same function, the
weights copied; the user's model is not touched), so that both kernels get weight quantizers
and the intermediate tensor the int8 rounding the file gives it (Xception, NASNet).

Example::

    >>> depthwise, pointwise = split_configs({"name": "s", "filters": 8, "kernel_size": (3, 3),
    ...     "strides": (1, 1), "padding": "same", "depth_multiplier": 1, "activation": "relu",
    ...     "use_bias": True})
    >>> depthwise["name"], depthwise["use_bias"], pointwise["name"], pointwise["kernel_size"]
    ('s_depthwise', False, 's', (1, 1))
"""

from tf_qnets.core.plan import unique_name

__all__ = ["SEPARABLE", "separable_per_layer", "separable_splits", "split_configs",
           "split_weights"]

SEPARABLE = "SeparableConv2D"

# SeparableConv2D settings that go to each part (the rest keep their defaults: the weights are
# copied from the separable layer)
_SHARED = ("trainable", "dtype", "data_format")
_DEPTHWISE = ("kernel_size", "strides", "padding", "dilation_rate", "depth_multiplier",
              "depthwise_initializer", "depthwise_regularizer", "depthwise_constraint")
_POINTWISE_RENAMED = {"pointwise_initializer": "kernel_initializer",
                      "pointwise_regularizer": "kernel_regularizer",
                      "pointwise_constraint": "kernel_constraint"}
_POINTWISE = ("filters", "activation", "use_bias", "bias_initializer", "bias_regularizer",
              "bias_constraint", "activity_regularizer")


def separable_splits(infos, per_layer=None, exclude=()):
    """``{separable layer name: name of its new DepthwiseConv2D}`` for the ``SeparableConv2D``
    layers among ``infos`` (:class:`tf_qnets.core.plan.LayerInfo`) that ``quantize_model``
    splits: all but those excluded (``exclude``, or ``per_layer[name] = None``). The depthwise
    part is called ``<name>_depthwise`` (a number appended if that name is taken); the
    pointwise part keeps the layer's name, its ``per_layer`` settings and its activation."""
    per_layer = per_layer if isinstance(per_layer, dict) else {}   # plan_layers checks it
    exclude = () if isinstance(exclude, str) else tuple(exclude)
    taken = {info.name for info in infos}
    found = {}
    for info in infos:
        if info.kind != SEPARABLE or info.name in exclude or (
                info.name in per_layer and per_layer[info.name] is None):
            continue
        found[info.name] = unique_name(f"{info.name}_depthwise", taken)
    return found


def split_configs(config, depthwise_name=None):
    """``(depthwise config, pointwise config)`` for the config of a ``SeparableConv2D``
    (either Keras): a linear ``DepthwiseConv2D`` without bias named ``depthwise_name``
    (default ``<name>_depthwise``), then a 1x1 ``Conv2D`` with the layer's name, filters,
    activation and bias."""
    name = config["name"]
    depthwise = {key: config[key] for key in _SHARED + _DEPTHWISE if key in config}
    depthwise.update(name=depthwise_name or f"{name}_depthwise", activation="linear",
                     use_bias=False)
    pointwise = {key: config[key] for key in _SHARED + _POINTWISE if key in config}
    pointwise.update({new: config[old] for old, new in _POINTWISE_RENAMED.items()
                      if old in config})
    pointwise.update(name=name, kernel_size=(1, 1), strides=(1, 1), padding="valid")
    return depthwise, pointwise


def split_weights(weights):
    """``(depthwise weights, pointwise weights)`` from a ``SeparableConv2D``'s
    ``get_weights()``: ``[depthwise_kernel, pointwise_kernel(, bias)]``."""
    return list(weights[:1]), list(weights[1:])


def separable_per_layer(per_layer, splits):
    """``per_layer`` with each split layer's settings given to its depthwise part too (the
    pointwise part keeps the name, so it keeps them anyway)."""
    if not isinstance(per_layer, dict) or not splits:
        return per_layer
    result = dict(per_layer)
    for name, depthwise_name in splits.items():
        if isinstance(per_layer.get(name), dict):
            result[depthwise_name] = dict(per_layer[name])
    return result

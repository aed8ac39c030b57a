"""A per-channel constant multiply (``tf.math.multiply(x, c)``) as a ``Rescaling`` layer (Keras 2).

``keras.applications.EfficientNet*`` built with ``weights="imagenet"`` scales its normalized
pixels by ``c_k = 1 / sqrt(std_k)`` per colour channel with a ``tf.math.multiply`` on a
constant of shape ``(1, 1, 1, 3)``: a ``TFOpLambda`` that tfmot cannot give a quantizer, so
the Keras model would compute ``x c`` in float where the integer file stores it as an int8
tensor. ``Rescaling(scale=c)`` computes the same ``y_k = c_k x_k`` as a layer of its own (same
name), which ``quantize_model`` rounds to int8 as the file does and which the exporter emits
as one exact 1x1 depthwise convolution (:mod:`tf_qnets.export.rewrites.channel_affine`).

Matched: a TFOpLambda of ``math.multiply`` (or ``*``) with one tensor operand and one constant
of shape ``(C,)`` or ``(1, ..., 1, C)``, ``C > 1`` the tensor's last dimension, called once. A
scalar constant is left to the exporter (:mod:`tf_qnets.export.rewrites.constant_scale`).
The user's model is not modified (a new one is built from its config, the weights copied).

Example::

    scales = channel_scale_layers(model)        # {"tf.math.multiply": [1.52, 1.53, 1.53]}
    model = replace_channel_scales(model, scales)
"""

import numpy as np

from tf_qnets.keras2.backend import keras

__all__ = ["channel_scale_layers", "replace_channel_scales"]

_MULTIPLY_FUNCTIONS = ("math.multiply", "__operators__.mul")


def _is_keras_tensor(value):
    return hasattr(value, "shape") and keras.backend.is_keras_tensor(value)


def _channel_constant(value, channels):
    """``value`` as a list of ``channels`` floats when it is a constant of shape ``(C,)`` or
    ``(1, ..., 1, C)``, else None."""
    if _is_keras_tensor(value) or isinstance(value, (bool, str)):
        return None
    try:
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    except (TypeError, ValueError):
        return None
    if not np.issubdtype(array.dtype, np.number) or array.ndim == 0:
        return None
    if array.shape[-1] != channels or any(d != 1 for d in array.shape[:-1]):
        return None
    return [float(v) for v in array.reshape(-1)]


def channel_scale_layers(model):
    """``{layer name: [c_1, ..., c_C]}`` for the model's TFOpLambda layers that multiply one
    tensor by a per-channel constant (module docstring)."""
    found = {}
    for layer in model.layers:
        if type(layer).__name__ != "TFOpLambda" or len(layer.inbound_nodes) != 1:
            continue
        if layer.get_config().get("function") not in _MULTIPLY_FUNCTIONS:
            continue
        node = layer.inbound_nodes[0]
        kwargs = {k: v for k, v in (node.call_kwargs or {}).items() if k != "name"}
        values = list(node.call_args or ())
        for keyword in ("x", "y")[len(values):]:
            if keyword in kwargs:
                values.append(kwargs.pop(keyword))
        if kwargs or len(values) != 2:
            continue
        tensors = [v for v in values if _is_keras_tensor(v)]
        if len(tensors) != 1 or tensors[0].shape.rank is None or tensors[0].shape[-1] is None:
            continue
        channels = int(tensors[0].shape[-1])
        constant = [v for v in values if v is not tensors[0]][0]
        scale = _channel_constant(constant, channels)
        if scale is not None and channels > 1:
            found[layer.name] = scale
    return found


def _without_keywords(node):
    """A node of a layer config's ``inbound_nodes`` without its call keywords: either one
    entry ``[name, node index, tensor index, kwargs]`` or a list of them."""
    if node and isinstance(node[0], str):
        return [node[0], node[1], node[2], {}]
    return [_without_keywords(entry) for entry in node]


def replace_channel_scales(model, scales):
    """A new model with each TFOpLambda named in ``scales`` replaced by a ``Rescaling`` layer
    of the same name (the other layers and their weights as they were); ``model`` itself
    when ``scales`` is empty."""
    if not scales:
        return model
    config = model.get_config()
    if "input_layers" not in config:      # a Sequential model: no TFOpLambda nodes to rebuild
        return model
    for layer in config["layers"]:
        scale = scales.get(layer["config"]["name"])
        if scale is None:
            continue
        layer["class_name"] = "Rescaling"
        layer.pop("module", None)
        layer.pop("registered_name", None)
        layer.pop("build_config", None)
        layer["config"] = {"name": layer["config"]["name"], "scale": scale, "offset": 0.0,
                           "trainable": layer["config"].get("trainable", True),
                           "dtype": layer["config"].get("dtype", "float32")}
        # a TFOpLambda's node keeps the constant operand as a keyword (``y=c``); the
        # Rescaling is called with the tensor alone
        layer["inbound_nodes"] = [_without_keywords(node) for node in layer["inbound_nodes"]]
    rebuilt = model.__class__.from_config(config)
    for layer in rebuilt.layers:
        if layer.name not in scales:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return rebuilt

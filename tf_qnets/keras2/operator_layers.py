"""TFOpLambda arithmetic as the Keras layers that compute it, so that it can be quantized (Keras 2).

tf_keras records ``x + y``, ``tf.math.multiply(x, y)`` or ``tf.math.multiply(x, c)`` in a
functional model as a ``TFOpLambda`` layer, to which tfmot cannot give a quantizer: the Keras
model then computes it in float where the integer file stores an int8 tensor (TFLite's ADD
and MUL round to their output range). ``quantize_model`` rebuilds these nodes as layers of the
same name that compute the same values:

* ``x + y`` (two tensors) -> ``Add()``; ``x * y`` (two tensors) -> ``Multiply()``; the
  tensors of the same rank, each dimension equal or 1 on one side (a residual sum, a
  squeeze-and-excitation gate);
* ``x * c`` with a per-channel constant ``c`` of shape ``(C,)`` or ``(1, ..., 1, C)``,
  ``C > 1`` the last dimension of ``x`` -> ``Rescaling(scale=c)`` (``keras.applications.
  EfficientNet*`` with ``weights="imagenet"`` scales its normalized pixels by
  ``1 / sqrt(std)`` so; the exporter emits it as one exact 1x1 depthwise convolution,
  :mod:`tf_qnets.export.rewrites.channel_affine`). A scalar constant is left to the exporter
  (:mod:`tf_qnets.export.rewrites.constant_scale`).

Each matched TFOpLambda has one call with two operands and no other keyword. The user's
model is not modified (a new one is built from its config, the weights copied).

Example::

    found = operator_layers(model)      # {"tf.math.multiply": ("Rescaling", {...}), ...}
    model = replace_operator_layers(model, found)
"""

import numpy as np

from tf_qnets.keras2.backend import keras

__all__ = ["operator_layers", "replace_operator_layers"]

_ADD_FUNCTIONS = ("__operators__.add", "math.add")
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


def _operands(layer):
    """The two operands of a TFOpLambda's only call, or None."""
    if type(layer).__name__ != "TFOpLambda" or len(layer.inbound_nodes) != 1:
        return None
    node = layer.inbound_nodes[0]
    kwargs = {k: v for k, v in (node.call_kwargs or {}).items() if k != "name"}
    values = list(node.call_args or ())
    for keyword in ("x", "y")[len(values):]:
        if keyword in kwargs:
            values.append(kwargs.pop(keyword))
    return None if kwargs or len(values) != 2 else values


def _broadcastable(a, b):
    a, b = tuple(a.shape)[1:], tuple(b.shape)[1:]
    return len(a) == len(b) and all(
        x is not None and y is not None and (x == y or x == 1 or y == 1) for x, y in zip(a, b))


def _replacement(layer):
    function = layer.get_config().get("function")
    if function not in _ADD_FUNCTIONS + _MULTIPLY_FUNCTIONS:
        return None
    values = _operands(layer)
    if values is None:
        return None
    tensors = [value for value in values if _is_keras_tensor(value)]
    if len(tensors) == 2:
        if not _broadcastable(*tensors):
            return None
        return ("Add" if function in _ADD_FUNCTIONS else "Multiply"), {}
    if len(tensors) != 1 or function not in _MULTIPLY_FUNCTIONS:
        return None
    if tensors[0].shape.rank is None or tensors[0].shape[-1] is None:
        return None
    channels = int(tensors[0].shape[-1])
    constant = values[1] if values[0] is tensors[0] else values[0]
    scale = _channel_constant(constant, channels)
    if scale is None or channels < 2:
        return None
    return "Rescaling", {"scale": scale, "offset": 0.0}


def operator_layers(model):
    """``{layer name: (Keras class name, config)}`` for the model's TFOpLambda layers that a
    Keras layer computes (module docstring)."""
    found = {}
    for layer in model.layers:
        replacement = _replacement(layer)
        if replacement is not None:
            found[layer.name] = replacement
    return found


def _entry(history):
    return [history[0], history[1], history[2], {}]


def _inbound(node, two_tensors):
    """A TFOpLambda's serialized node ``[x_name, node, tensor, {"y": [y_name, node, tensor],
    ...}]`` (or a list holding it) as the node of a layer called on ``x`` alone, or on
    ``[x, y]``."""
    if not (node and isinstance(node[0], str)):
        return [_inbound(entry, two_tensors) for entry in node]
    if two_tensors:
        return [_entry(node), _entry(node[3]["y"])]
    return _entry(node)


def replace_operator_layers(model, replacements):
    """A new model with each TFOpLambda named in ``replacements`` (:func:`operator_layers`)
    replaced by its Keras layer of the same name (the other layers and their weights as they
    were); ``model`` itself when there is nothing to replace."""
    if not replacements:
        return model
    config = model.get_config()
    if "input_layers" not in config:      # a Sequential model: no TFOpLambda nodes to rebuild
        return model
    for layer in config["layers"]:
        found = replacements.get(layer["config"]["name"])
        if found is None:
            continue
        class_name, settings = found
        two_tensors = class_name in ("Add", "Multiply")
        if two_tensors and not all(isinstance(node[3].get("y"), list)
                                   for node in _entries(layer["inbound_nodes"])):
            continue     # the second tensor is not serialized as a layer output: leave it
        for key in ("module", "registered_name", "build_config"):
            layer.pop(key, None)
        layer["class_name"] = class_name
        layer["config"] = dict(settings, name=layer["config"]["name"],
                               trainable=layer["config"].get("trainable", True),
                               dtype=layer["config"].get("dtype", "float32"))
        if two_tensors:
            layer["inbound_nodes"] = [_inbound(layer["inbound_nodes"][0], True)]
        else:
            layer["inbound_nodes"] = [_inbound(node, False) for node in layer["inbound_nodes"]]
    try:
        rebuilt = model.__class__.from_config(config)
    except (TypeError, ValueError):
        # a model Keras cannot rebuild from its config (custom layers it does not know):
        # its operators stay TFOpLambda layers, computed in float
        return model
    for layer in rebuilt.layers:
        if layer.name not in replacements:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return rebuilt


def _entries(nodes):
    """The ``[name, node, tensor, kwargs]`` entries of a serialized ``inbound_nodes``."""
    for node in nodes:
        if node and isinstance(node[0], str):
            yield node
        else:
            yield from _entries(node)

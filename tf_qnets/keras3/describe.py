"""Describe a Keras 3 model's layers for the backend-neutral planner (:mod:`tf_qnets.core.plan`).

Each layer becomes a :class:`tf_qnets.core.plan.LayerInfo`: its class name, the name of its
activation function, a ``ReLU``'s negative slope, whether it owns weights, whether it is a
nested model and whether one of its outputs is a model output. ``check_model`` refuses
what the Keras 3 path cannot quantize, with the fix in the message.

Example::

    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="relu")])
    >>> [(info.kind, info.activation) for info in layer_infos(model)]
    [('Dense', 'relu')]
"""

import keras

from tf_qnets.core.layer_kinds import is_identity_of, pads_border_of
from tf_qnets.core.plan import LayerInfo

__all__ = ["activation_name", "check_model", "layer_infos"]


def check_model(model):
    """Raise a TypeError/ValueError naming the problem unless ``model`` is a built Keras 3
    Sequential or Functional model of plain (unquantized) layers."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a Keras 3 model (keras.Model), got {type(model).__name__}. "
            "For tf_keras (Keras 2) models use tf_qnets.quantize_model.")
    if not isinstance(model, keras.Sequential) and not isinstance(
            model, keras.src.models.functional.Functional):
        raise TypeError(
            f"`model` is a subclassed model ({type(model).__name__}); tf_qnets needs a Sequential "
            "or Functional model whose layers it can see. Rewrite `call` as a Functional model: "
            "`inputs = keras.Input(shape); outputs = ...layers...; keras.Model(inputs, outputs)`.")
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            "`model` is not built; start it with `keras.Input(shape)` (or call "
            "`model.build(input_shape)`) first.")
    from tf_qnets.keras3.wrapper import QNetsWrapper

    for layer in model.layers:
        if isinstance(layer, QNetsWrapper):
            raise ValueError(
                f"`model` is already quantized (layer {layer.name!r} is a QNetsWrapper); pass "
                "the original float model.")


def activation_name(layer):
    """The Keras name of ``layer``'s activation function (``"relu"``, ...), or None."""
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    try:
        name = keras.activations.serialize(activation)
    except (TypeError, ValueError):
        return getattr(activation, "__name__", type(activation).__name__)
    if isinstance(name, dict):
        name = name.get("config", {}).get("name", name.get("class_name"))
    return name


def _output_ids(layer):
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return set()
    outputs = output if isinstance(output, (list, tuple)) else [output]
    return {id(tensor) for tensor in outputs}


def layer_readers(model):
    """Layer name -> names of the layers of ``model`` that read its output, and of the
    operator nodes (``x + 3.0``: Keras 3 operations that are not layers) that do."""
    inside = {id(layer) for layer in model.layers}
    found = {}
    for layer in model.layers:
        names = []
        for node in getattr(layer, "_outbound_nodes", []):
            reader = node.operation
            listed = id(reader) in inside or not isinstance(reader, keras.layers.Layer)
            if listed and reader.name not in names:
                names.append(reader.name)
        found[layer.name] = names
    return found


def layer_infos(model):
    """``[LayerInfo]`` for ``model.layers`` in order."""
    model_outputs = {id(tensor) for tensor in model.outputs}
    infos = []
    for layer in model.layers:
        infos.append(LayerInfo(
            name=layer.name,
            kind=type(layer).__name__,
            activation=activation_name(layer),
            negative_slope=float(getattr(layer, "negative_slope", 0.0) or 0.0),
            has_weights=bool(layer.weights),
            is_model=isinstance(layer, keras.Model),
            pads_border=pads_border_of(layer),
            is_identity=is_identity_of(layer),
            is_model_output=bool(_output_ids(layer) & model_outputs),
        ))
    return infos

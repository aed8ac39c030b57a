"""``x + y`` and ``x * y`` between two tensors as the Keras layers that compute them (Keras 3).

A Keras 3 functional model records ``x + y`` or ``x * y`` of two tensors as a ``keras.ops``
node (an ``Add`` / ``Multiply`` operation, not a layer), to which ``quantize_model`` gives no
quantizer: the Keras model then adds in float where the integer file rounds the sum, and the
staircase on a ReLU after a residual ``x + y`` cannot be taken by the ADD's requantization
(:mod:`tf_qnets.export.rewrites.add_staircase`). ``quantize_model`` rebuilds each such node
as an ``Add()`` / ``Multiply()`` layer of the same name that computes the same values, as it
does for tf_keras' TFOpLambda nodes (:mod:`tf_qnets.keras2.operator_layers`):

* the node has one call with two tensor operands and no keyword;
* the operands have the same rank, each dimension equal on both sides or 1 on one (a
  residual sum, a squeeze-and-excitation gate).

A constant operand (``x + 3.0``, ``x * c``) stays an operation: the exporter lowers those
itself. The user's model is not modified (a new one is built from the configs, the weights
copied); a model Keras cannot rebuild so is returned as it is.

Example::

    found = operator_layers(model)          # {"add": "Add"}
    model = replace_operator_layers(model, found)
"""

import keras

__all__ = ["operator_layers", "replace_operator_layers"]

_LAYER_CLASSES = {"Add": keras.layers.Add, "Multiply": keras.layers.Multiply}


def _broadcastable(first, second):
    """Same rank, each dimension equal or 1 on one side."""
    if len(first) != len(second):
        return False
    return all(a == b or a == 1 or b == 1 for a, b in zip(first[1:], second[1:]))


def operator_layers(model):
    """``{operation name: "Add" | "Multiply"}`` for the two-tensor ``+`` / ``*`` nodes of a
    functional ``model`` (module docstring); empty for a Sequential model."""
    found = {}
    if isinstance(model, keras.Sequential):
        return found
    for operation in model.operations:
        kind = type(operation).__name__
        if kind not in _LAYER_CLASSES or isinstance(operation, keras.layers.Layer):
            continue
        nodes = getattr(operation, "_inbound_nodes", [])
        if len(nodes) != 1:
            continue
        arguments = nodes[0].arguments
        operands = list(arguments.args)
        if (arguments.kwargs or len(operands) != 2
                or not all(isinstance(value, keras.KerasTensor) for value in operands)
                or not _broadcastable(tuple(operands[0].shape), tuple(operands[1].shape))):
            continue
        found[operation.name] = kind
    return found


def replace_operator_layers(model, found):
    """A new model in which each node named in ``found`` is the layer of its kind (same name,
    called on the list of its two operands), the other layers rebuilt from their configs
    with their weights; ``model`` itself when ``found`` is empty or Keras cannot rebuild it."""
    if not found:
        return model
    layers = {name: _LAYER_CLASSES[kind](name=name) for name, kind in found.items()}
    new_layers = {id(layer) for layer in layers.values()}

    def clone(operation):
        if operation.name in layers and not isinstance(operation, keras.layers.Layer):
            return layers[operation.name]
        return operation.__class__.from_config(operation.get_config())

    def call(operation, *args, **kwargs):
        if id(operation) in new_layers:          # called as the operation was: x + y
            return operation(list(args))
        return operation(*args, **kwargs)

    try:
        rebuilt = keras.models.clone_model(model, clone_function=clone, call_function=call)
    except (TypeError, ValueError):
        return model
    for layer in model.layers:
        if layer.weights:
            rebuilt.get_layer(layer.name).set_weights(layer.get_weights())
    return rebuilt

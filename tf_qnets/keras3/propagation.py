"""Run a Keras 3 model one layer at a time over a list of batches, keeping live tensors only.

Calibration visits the layers in topological order and changes each one (a quantizer's
scales, a BatchNormalization's statistics) before the next sees its output. A probe model
from the inputs to every calibrated layer costs ``O(layers^2)`` layer calls (MobileNetV2 at
32x32 did not finish calibrating in 10 minutes under JAX that way); walking the graph once,
node by node, costs one pass: each node's outputs are kept, for all batches, until its last
reader has run.

Example::

    def visit(layer, inputs, compute):
        outputs = compute()          # the layer on every batch (a list of tensors)
        ...                          # change the layer, then
        return compute()             # what the layers after it see

    propagate(model, batches, visit)
"""

import keras
import numpy as np
from keras import ops

from tf_qnets.core.calibration import live_bytes_per_sample as core_live_bytes
__all__ = ["graph_of", "live_bytes_per_sample", "ordered_nodes", "propagate"]


def graph_of(model):
    """The functional graph of ``model`` (a Sequential model keeps one inside)."""
    return getattr(model, "_functional", None) or model


def ordered_nodes(model):
    """The model's call nodes in topological order (inputs first), input nodes left out."""
    graph = graph_of(model)
    nodes = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):  # noqa: SLF001 - graph walk
        nodes.extend(node for node in graph._nodes_by_depth[depth]
                     if node.operation is not None and not node.is_input)
    return nodes


def live_bytes_per_sample(model):
    """:func:`tf_qnets.core.calibration.live_bytes_per_sample` of the model's layer outputs."""
    return core_live_bytes(
        [tuple(tensor.shape) for node in ordered_nodes(model) for tensor in node.outputs
         if getattr(tensor, "shape", None) is not None])


def _readers(graph, nodes):
    counts = {}
    for node in nodes:
        for tensor in node.input_tensors:
            counts[id(tensor)] = counts.get(id(tensor), 0) + 1
    for tensor in graph.outputs:
        counts[id(tensor)] = counts.get(id(tensor), 0) + 1
    return counts


def _call(layer, args, kwargs):
    if getattr(layer, "_call_has_training_arg", False):
        kwargs = dict(kwargs, training=False)
    return layer(*args, **kwargs)


def propagate(model, batches, visit):
    """Walk ``model`` node by node over ``batches`` (a list of input batches; for a model with
    several inputs each batch is a list of arrays in the order of ``model.inputs``).

    ``visit(layer, inputs, compute)`` is called for every node: ``inputs`` is the list of the
    node's first input tensor, one per batch, and ``compute()`` runs the layer (inference
    mode) on every batch with its current state and returns the list of outputs. ``visit``
    returns the outputs the later layers should see. Returns the model outputs per batch.
    """
    graph = graph_of(model)
    nodes = ordered_nodes(model)
    remaining = _readers(graph, nodes)
    values = {}
    several = len(graph.inputs) > 1     # then each batch is a list of arrays, one per input
    for position, tensor in enumerate(graph.inputs):
        values[id(tensor)] = [
            ops.convert_to_tensor(np.asarray(b[position] if several else b, np.float32))
            for b in batches]
    for node in nodes:
        layer = node.operation
        ids = [id(tensor) for tensor in node.input_tensors]

        def compute(node=node, layer=layer, ids=ids):
            outputs = []
            for index in range(len(batches)):
                known = {tensor_id: values[tensor_id][index] for tensor_id in ids}
                args, kwargs = node.arguments.fill_in(known)
                outputs.append(_call(layer, args, kwargs))
            return outputs

        first = list(values[ids[0]]) if ids else []
        outputs = visit(layer, first, compute)
        if len(node.outputs) == 1:
            values[id(node.outputs[0])] = outputs
        else:
            for position, tensor in enumerate(node.outputs):
                values[id(tensor)] = [keras.tree.flatten(out)[position] for out in outputs]
        for tensor_id in ids:
            remaining[tensor_id] -= 1
            if remaining[tensor_id] <= 0:
                values.pop(tensor_id, None)
    return [values[id(tensor)] for tensor in graph.outputs]

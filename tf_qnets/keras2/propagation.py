"""Run a functional model one layer at a time over a list of batches, keeping live tensors only.

Calibration visits the layers in topological order and changes each one (a quantizer's
scales, a BatchNormalization's statistics) before the next sees its output. Rebuilding a
sub-model from the inputs for every layer costs ``O(layers^2)`` forward passes and one trace
per layer (minutes for a MobileNet); walking the graph once, node by node, costs one pass:
each node's outputs are kept for all batches until its last reader has run.

Example::

    def visit(layer, inputs, compute):
        outputs = compute()          # the layer on every batch (a list of tensors)
        ...                          # change the layer, then
        return compute()             # what the layers after it see

    propagate(model, batches, visit)
"""

import numpy as np

from tf_qnets.core.calibration import live_bytes_per_sample as core_live_bytes
from tf_qnets.keras2.backend import tf
__all__ = ["propagate", "live_bytes_per_sample", "ordered_nodes", "count_readers"]


def ordered_nodes(model):
    """The model's call nodes in topological order (inputs first), input nodes left out."""
    nodes = []
    for depth in sorted(model._nodes_by_depth, reverse=True):  # noqa: SLF001 - graph walk
        nodes.extend(node for node in model._nodes_by_depth[depth] if not node.is_input)
    return nodes


def count_readers(model, nodes):
    """Tensor id -> number of ``nodes`` (plus model outputs) reading it."""
    counts = {}
    for node in nodes:
        for tensor_id in node.flat_input_ids:
            counts[tensor_id] = counts.get(tensor_id, 0) + 1
    for tensor in model.outputs:
        counts[str(id(tensor))] = counts.get(str(id(tensor)), 0) + 1
    return counts


def live_bytes_per_sample(model):
    """:func:`tf_qnets.core.calibration.live_bytes_per_sample` of the model's layer outputs."""
    shapes = []
    for node in ordered_nodes(model):
        for tensor in tf.nest.flatten(node.outputs):
            shape = getattr(tensor, "shape", None)
            if shape is not None and shape.rank is not None:
                shapes.append(tuple(shape))
    return core_live_bytes(shapes)


def propagate(model, batches, visit):
    """Walk ``model`` node by node over ``batches`` (a list of input batches).

    ``visit(layer, inputs, compute)`` is called for every node: ``inputs`` is the list of the
    node's first input tensor, one per batch, and ``compute()`` runs the layer (inference
    mode) on every batch with its current state and returns the list of outputs. ``visit``
    returns the outputs the later layers should see.
    """
    nodes = ordered_nodes(model)
    remaining = count_readers(model, nodes)
    values = {}
    for tensor in model.inputs:
        values[str(id(tensor))] = [tf.convert_to_tensor(np.asarray(b, np.float32)) for b in batches]
    for node in nodes:
        layer = node.layer
        per_batch = [{k: [v[i]] * 64 for k, v in values.items() if k in node.flat_input_ids}
                     for i in range(len(batches))]

        def compute(layer=layer, node=node, per_batch=per_batch):
            outputs = []
            for arguments in per_batch:
                args, kwargs = node.map_arguments(
                    {k: list(v) for k, v in arguments.items()})
                if "training" in getattr(layer, "_call_spec").arg_names:
                    kwargs["training"] = False
                outputs.append(layer(*args, **kwargs))
            return outputs

        first = [values[node.flat_input_ids[0]][i] for i in range(len(batches))] if (
            node.flat_input_ids) else []
        outputs = visit(layer, first, compute)
        output_ids = node.flat_output_ids
        if len(output_ids) == 1:
            values[output_ids[0]] = outputs
        else:
            for position, tensor_id in enumerate(output_ids):
                values[tensor_id] = [tf.nest.flatten(out)[position] for out in outputs]
        for tensor_id in node.flat_input_ids:
            remaining[tensor_id] -= 1
            if remaining[tensor_id] <= 0:
                values.pop(tensor_id, None)
    return [values[str(id(t))] for t in model.outputs]

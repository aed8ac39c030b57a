"""Which staircases are computed straight from a kernel layer's int32 accumulator.

Shared by the two rewrites that lower such a staircase inside its kernel layer
(:mod:`.aligned_staircase` for uniform thresholds, :mod:`.staircase_copies` for the others).
"""

import numpy as np

from tf_qnets.core.layer_kinds import KERNEL_ATTRIBUTES
from tf_qnets.export.activations import is_uniform_staircase
from tf_qnets.export.layers import is_linear, layer_class, relu_cap
from tf_qnets.export.rewrites.batch_norm_fold import folded_bn_names

__all__ = ["staircase_source", "staircases_from_accumulators", "cap_changes_no_code", "Deferred"]


def cap_changes_no_code(plan, node, cap):
    """True when a ReLU cap (``cap`` None: no cap) changes no code of ``node``'s staircase:
    its last threshold lies below the cap, so everything the cap clips is at the top level
    either way."""
    if cap is None:
        return True
    _, beta, thresholds, _ = plan.outputs[node.layer.name][1]
    return bool(np.max(np.asarray(thresholds, np.float64)) / beta < cap * (1 - 1e-6))


class Deferred:
    """A kernel layer's output not emitted yet: its staircase builds per-threshold copies."""

    def __init__(self, layer, inputs):
        self.layer = layer
        self.inputs = inputs


def staircase_source(plan, node):
    """``(kernel layer name, relu before the staircase)`` when the staircase of ``node`` is
    computed from a kernel layer's accumulator, else ``None``.

    That holds when the staircase sits on a kernel layer with a linear or ReLU activation
    (case a), or on a plain ReLU reading only a kernel layer with a linear activation,
    possibly through a folded BatchNormalization (case b). A capped ReLU (ReLU6) counts when
    the staircase's last threshold lies below the cap: everything the cap clips is at the
    top level either way.
    """
    if layer_class(node.layer) in KERNEL_ATTRIBUTES:
        if is_linear(node.layer):
            return node.layer.name, False
        if node.layer.activation == "relu":
            return node.layer.name, True
        return None
    is_relu, cap = relu_cap(node.layer)
    if not is_relu or len(node.flat_input_ids) != 1 or not cap_changes_no_code(plan, node, cap):
        return None
    source = plan.source_node(node)
    if source is not None and source.layer.name in folded_bn_names(plan):
        if plan.consumers.get(source.flat_input_ids[0], 0) != 1:
            return None
        source = plan.source_node(source)
    if (source is None or layer_class(source.layer) not in KERNEL_ATTRIBUTES
            or not is_linear(source.layer) or source.layer.name in plan.outputs
            or plan.consumers.get(source.flat_output_ids[0], 0) != 1
            or plan.consumers.get(node.flat_input_ids[0], 0) != 1):
        return None
    return source.layer.name, True


def staircases_from_accumulators(plan, aligned):
    """``[(staircase node, kernel node, relu)]`` for every staircase :func:`staircase_source`
    finds that is lowered by alignment (``aligned``: uniform thresholds, no ``exact_uniform``)
    or, ``aligned`` False, by per-threshold copies (the others)."""
    found = []
    for node in plan.nodes:
        kind, values = plan.outputs.get(node.layer.name, (None, None))
        if kind != "staircase":
            continue
        source = staircase_source(plan, node)
        if source is None:
            continue
        by_alignment = is_uniform_staircase(values[2], values[3]) and not plan.exact_uniform
        if by_alignment == aligned:
            found.append((node, plan.node_by_name[source[0]], source[1]))
    return found

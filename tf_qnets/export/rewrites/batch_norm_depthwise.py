"""Rewrite: an unfolded BatchNormalization before a ReLU staircase, as a 1x1 depthwise convolution.

Matches a BatchNormalization over the last axis of a 4-D tensor that no kernel layer before it
absorbs (:func:`tf_qnets.core.bias_lattice.folded_batch_norms` does not fold it: it reads an
``Add``, a ``Concatenate``, a pooling), whose only reader is a ReLU carrying a uniform
staircase: the pre-activation ``BN -> ReLU`` of ResNetV2 and DenseNet. It replaces the BN's
description in the plan by a linear ``DepthwiseConv2D`` with a 1x1 kernel ``g_c`` and bias
``h_c`` (``BN(x) = g_c x + h_c``, :func:`tf_qnets.export.layers.affine_factors`); the other
rewrites then treat it as any kernel layer: its int8 weight is ``+-127`` at the per-channel
scale ``|g_c| / 127`` (exact), the int32 accumulator holds ``+-127`` times the input code, and
the staircase after it is that layer's own requantization (:mod:`.aligned_staircase`). The
unfolded form (:mod:`.affine`: MUL then ADD, each rounded to a calibrated range) rounds twice
before the staircase, so its codes could differ from Keras'. Emits nothing itself.
"""

import dataclasses

import numpy as np

from tf_qnets.core.bias_lattice import folded_batch_norms
from tf_qnets.export.activations import is_uniform_staircase
from tf_qnets.export.layers import affine_factors, channel_axis, relu_cap
from tf_qnets.export.rewrites.staircase_source import cap_changes_no_code

__all__ = ["BatchNormDepthwise", "as_depthwise", "replace_by_depthwise"]


def as_depthwise(layer):
    """The description of a linear 1x1 ``DepthwiseConv2D`` that computes the BatchNormalization
    (or Normalization, Rescaling) ``layer`` at inference (same name, input and output
    quantizer), or None when it has no affine form."""
    factors = affine_factors(layer)
    if factors is None:
        return None
    scale, offset = (np.asarray(f, np.float32).reshape(-1) for f in factors)
    channels = int(layer.input_shape[-1])
    scale = np.broadcast_to(scale, (channels,))
    offset = np.broadcast_to(offset, (channels,))
    config = {"name": layer.name, "kernel_size": (1, 1), "strides": (1, 1), "padding": "valid",
              "depth_multiplier": 1, "data_format": "channels_last", "dilation_rate": (1, 1),
              "activation": "linear", "use_bias": True}
    return dataclasses.replace(
        layer, class_name="DepthwiseConv2D", config=config,
        weights={"kernel": scale.reshape(1, 1, channels, 1).copy(), "bias": offset.copy()},
        weight_quantizer=None)


def replace_by_depthwise(node, replaced):
    """Put :func:`as_depthwise` of the node's layer in its place in the plan's (fresh)
    description of this export, noting it in ``replaced``; nothing when it has no affine form."""
    depthwise = as_depthwise(node.layer)
    if depthwise is not None:
        replaced[node.layer.name] = True
        node.layer = depthwise


class BatchNormDepthwise:
    name = "batch norm depthwise"
    order = 5

    def plan(self, plan):
        folded = {bn.name for bn in folded_batch_norms(plan.network).values()}
        replaced = plan.note(self.name)
        for node in plan.nodes:
            layer = node.layer
            if (layer.class_name != "BatchNormalization" or layer.name in folded
                    or layer.output_quantizer is not None or len(node.flat_input_ids) != 1
                    or len(tuple(layer.input_shape)) != 4 or channel_axis(layer) != -1):
                continue
            reader = plan.only_reader(node.flat_output_ids[0])
            if reader is None or not _uniform_relu_staircase(plan, reader):
                continue
            replace_by_depthwise(node, replaced)

    def emit(self, node, values, context):   # never claims a node
        raise AssertionError(f"{self.name} emits nothing ({node.layer.name}).")


def _uniform_relu_staircase(plan, node):
    kind, values = plan.outputs.get(node.layer.name, (None, None))
    if kind != "staircase" or len(node.flat_input_ids) != 1:
        return False
    is_relu, cap = relu_cap(node.layer)
    return (is_relu and is_uniform_staircase(values[2], values[3])
            and cap_changes_no_code(plan, node, cap))

"""Rewrite: a per-channel Normalization or Rescaling with an int8 output, as a 1x1 depthwise conv.

Matches a ``Normalization`` that is not the identity (``keras.applications.EfficientNet*``
with ``weights="imagenet"``: ImageNet mean and variance) or a ``Rescaling`` with one scale per
channel (the ``1 / sqrt(std)`` scaling after it), over the last axis of a 4-D tensor, that the
Keras model rounds to int8 (``quantize_model`` gives both an int8 output quantizer). Both
compute ``y_c = g_c x_c + h_c`` (:func:`tf_qnets.export.layers.affine_factors`). The plan's
description becomes a linear ``DepthwiseConv2D`` with the 1x1 kernel ``g_c`` and bias ``h_c``
(:func:`.batch_norm_depthwise.as_depthwise`), which :mod:`.kernels` emits as any kernel layer:
the int8 weight is ``+-127`` at the per-channel scale ``|g_c| / 127`` (exact), the int32
accumulator ``127 q + B_c`` on the input code ``q``, rounded once to the output's int8 range,
as the Keras model's quantizer rounds ``g_c x + h_c``. The file's bias ``B_c`` is ``h_c``
rounded to a unit of ``s_in |g_c| / 127``, a 254th of an input step or less (none for a
Rescaling without offset). The former lowering (:mod:`.affine`: an int8 MUL with a
calibrated range of its own, then an ADD) rounded twice where Keras rounds once.

A scalar Rescaling keeps :mod:`.affine`'s exact product (the codes stay, only the scale
changes). Emits nothing itself.
"""

import numpy as np

from tf_qnets.core.network_graph import is_identity_normalization
from tf_qnets.export.layers import channel_axis
from tf_qnets.export.rewrites.batch_norm_depthwise import replace_by_depthwise

__all__ = ["ChannelAffine", "is_channel_affine"]


def is_channel_affine(layer):
    """True for a described Normalization that is not the identity, or a Rescaling with one
    scale per channel."""
    if layer.class_name == "Normalization":
        return not is_identity_normalization(layer) and not layer.config.get("invert", False)
    if layer.class_name == "Rescaling":
        return np.size(layer.config.get("scale", 1.0)) > 1
    return False


class ChannelAffine:
    name = "channel affine"
    order = 6

    def plan(self, plan):
        replaced = plan.note(self.name)
        for node in plan.nodes:
            layer = node.layer
            kind, _ = plan.outputs.get(layer.name, (None, None))
            if (kind != "int8" or not is_channel_affine(layer) or len(node.flat_input_ids) != 1
                    or len(tuple(layer.input_shape)) != 4 or channel_axis(layer) != -1):
                continue
            replace_by_depthwise(node, replaced)

    def emit(self, node, values, context):   # never claims a node
        raise AssertionError(f"{self.name} emits nothing ({node.layer.name}).")

"""Rewrite: layers that only move values keep their input's int8 range.

Matches the scale-keeping layers of ``tf_qnets.core.layer_kinds``: Flatten, Reshape, dropout
and noise layers (identities at inference), max pooling, Permute, cropping and zero padding,
and average pooling (TFLite's int8 average pooling keeps its input's scale). Emits the layer's
call with no range of its own; a Reshape as one RESHAPE to a constant shape (Keras computes
the batch size at run time, which the converter writes as SHAPE, STRIDED_SLICE and PACK ops
and a reshaped tensor of dynamic shape that XNNPACK does not take: the layers reading it then
run in TFLite's own int8 kernels, which round differently).
An average pooling that carries an int8 output range of its own (``quantize_model`` gives one
where the file stores the pooled tensor) is left to :mod:`.layer_call` (its call, then that
range) or, with ``padding="valid"``, to :mod:`.average_pooling`.
"""

from tf_qnets.core.layer_kinds import SCALE_KEEPING
from tf_qnets.export.layers import layer_class
from tf_qnets.keras2.backend import tf

__all__ = ["PassThrough"]


def _has_own_range(layer):
    return layer.class_name.startswith("AveragePooling") and layer.output_quantizer is not None


class PassThrough:
    name = "pass through"
    order = 10

    def plan(self, plan):
        for node in plan.nodes:
            if layer_class(node.layer) in SCALE_KEEPING and not _has_own_range(node.layer):
                plan.claim(node, self)

    def emit(self, node, values, context):
        x = values[node.flat_input_ids[0]]
        target = node.layer.config.get("target_shape")
        if layer_class(node.layer) == "Reshape" and target and all(
                isinstance(size, int) and size > 0 for size in target):
            return tf.reshape(x, [-1] + [int(size) for size in target])
        return context.plan.tf_layer(node.layer)(x, training=False)

"""Rewrite: a BatchNormalization folded into the linear kernel layer before it.

Matches a BatchNormalization over the last axis whose only input is the output of a kernel
layer with a linear activation and no output quantizer, read by nothing else. The kernel
layer is pinned with the BN factors folded into its per-channel scales and bias
(:mod:`.kernels`). Emits nothing: the BN node's output is its input.
"""

from tf_qnets.keras2.backend import keras
from tf_qnets.core.layer_kinds import KERNEL_ATTRIBUTES
from tf_qnets.export.layers import is_linear, layer_class, quantizers

__all__ = ["BatchNormFold"]


class BatchNormFold:
    name = "batch norm fold"
    order = 30

    def plan(self, plan):
        folds = plan.note(self.name)   # kernel layer name -> the BN layer folded into it
        for node in plan.nodes:
            if (not isinstance(node.layer, keras.layers.BatchNormalization)
                    or len(node.flat_input_ids) != 1):
                continue
            source = plan.source_node(node)
            if source is None or layer_class(source.layer) not in KERNEL_ATTRIBUTES:
                continue
            if not is_linear(source.layer) or quantizers(source.layer)[2] is not None:
                continue
            if plan.consumers[node.flat_input_ids[0]] != 1:
                continue
            axis = node.layer.axis
            axis = axis[0] if isinstance(axis, (list, tuple)) else axis
            if axis not in (-1, len(node.layer.input_shape) - 1):
                continue
            folds[source.layer.name] = node.layer
            plan.claim(node, self)

    def emit(self, node, values, context):
        return values[node.flat_input_ids[0]]


def folded_bn_names(plan):
    """Names of the BatchNormalization layers folded into a kernel layer."""
    return {bn.name for bn in plan.note(BatchNormFold.name).values()}

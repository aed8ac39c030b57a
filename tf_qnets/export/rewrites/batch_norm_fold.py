"""Rewrite: a BatchNormalization folded into the linear kernel layer before it.

Matches a BatchNormalization over the last axis whose only input is the output of a kernel
layer with a linear activation and no output quantizer, read by nothing else. The kernel
layer is pinned with the BN factors folded into its per-channel scales and bias
(:mod:`.kernels`). Emits nothing: the BN node's output is its input.
"""

from tf_qnets.core.layer_kinds import KERNEL_ATTRIBUTES
from tf_qnets.export.layers import channel_axis, is_linear, layer_class

__all__ = ["BatchNormFold"]


class BatchNormFold:
    name = "batch norm fold"
    order = 30

    def plan(self, plan):
        folds = plan.note(self.name)   # kernel layer name -> the BN layer folded into it
        for node in plan.nodes:
            if layer_class(node.layer) != "BatchNormalization" or len(node.flat_input_ids) != 1:
                continue
            source = plan.source_node(node)
            if source is None or layer_class(source.layer) not in KERNEL_ATTRIBUTES:
                continue
            if not is_linear(source.layer) or source.layer.output_quantizer is not None:
                continue
            if plan.consumers[node.flat_input_ids[0]] != 1:
                continue
            if channel_axis(node.layer) != -1:
                continue
            folds[source.layer.name] = node.layer
            plan.claim(node, self)

    def emit(self, node, values, context):
        # The BN's own int8 output range, when training simulated one (else the input as is).
        return context.output(node.layer, values[node.flat_input_ids[0]], calibrate=False)


def folded_bn_names(plan):
    """Names of the BatchNormalization layers folded into a kernel layer."""
    return {bn.name for bn in plan.note(BatchNormFold.name).values()}

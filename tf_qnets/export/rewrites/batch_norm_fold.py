"""Rewrite: a BatchNormalization folded into the linear kernel layer before it.

Matches a BatchNormalization over the last axis whose only input is the output of a kernel
layer with a linear activation and no output quantizer, read by nothing else. The kernel
layer is pinned with the BN factors folded into its per-channel scales and bias
(:mod:`.kernels`). Emits nothing: the BN node's output is its input.
"""

from tf_qnets.core.bias_lattice import folded_batch_norms

__all__ = ["BatchNormFold"]


class BatchNormFold:
    name = "batch norm fold"
    order = 30

    def plan(self, plan):
        folds = plan.note(self.name)   # kernel layer name -> the BN layer folded into it
        for kernel_name, bn in folded_batch_norms(plan.network).items():
            folds[kernel_name] = bn
            plan.claim(plan.node_by_name[bn.name], self)

    def emit(self, node, values, context):
        # The BN's own int8 output range, when training simulated one (else the input as is).
        return context.output(node.layer, values[node.flat_input_ids[0]], calibrate=False)


def folded_bn_names(plan):
    """Names of the BatchNormalization layers folded into a kernel layer."""
    return {bn.name for bn in plan.note(BatchNormFold.name).values()}

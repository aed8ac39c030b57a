"""Rewrite: a staircase on the ReLU after an addition, taken by the ADD's own requantization.

Matches a uniform staircase with levels ``0 .. n`` on a ReLU (a ReLU6 too when the top
threshold lies below 6) whose only input is an ``Add`` that nothing else reads (the block
output of a ResNet) or the addition of a constant (``x + 3.0`` in MobileNetV3's hard
sigmoid ``relu6(x + 3) / 6``); it takes over both nodes. Emits the ADD with no range of its own, a
fused ReLU and the output range ``[(n - 255) / beta, n / beta]`` (scale ``1 / beta``): TFLite's
ADD rescales both int8 inputs at high precision and rounds once, to ``round(beta * sum)``,
clipped at 0 by the ReLU and at ``n`` by int8 saturation: the staircase. A MUL by
``alpha * beta`` then gives the values ``alpha * level`` (the codes do not change; no MUL
when ``alpha * beta`` is 1). Without this rewrite the sum is first rounded to a calibrated
int8 range and the staircase computed from that rounded value.
"""

import numpy as np

from tf_qnets.keras2.backend import tf
from tf_qnets.core.add_margin import is_add_staircase
from tf_qnets.export.activations import fake_quant, saturating_range
from tf_qnets.export.emit import staircase_scope
from tf_qnets.export.layers import layer_class, scalar_operation
from tf_qnets.export.rewrites.layer_call import LayerCall, call_layer

__all__ = ["AddStaircase"]


class AddStaircase:
    name = "add staircase"
    order = 80

    def plan(self, plan):
        for node in plan.nodes:
            if len(node.flat_input_ids) != 1 or not is_add_staircase(node.layer):
                continue
            source = plan.source_node(node)
            if (source is None or not _is_addition(source.layer)
                    or source.layer.name in plan.outputs
                    or plan.only_reader(source.flat_output_ids[0]) is not node):
                continue
            plan.claim(source, self)
            plan.claim(node, self)

    def emit(self, node, values, context):
        if not context.tracing:
            return LayerCall().emit(node, values, context)
        layer = node.layer
        if _is_addition(layer):   # the sum, rounded only by the staircase
            return call_layer(node, values, context)
        alpha, beta, _, levels = context.plan.outputs[layer.name][1]
        top = int(levels.levels[-1])
        with tf.name_scope(staircase_scope(layer.name)):
            codes = fake_quant(tf.nn.relu(values[node.flat_input_ids[0]]), (top - 255) / beta,
                               top / beta)
            factor = np.float32(alpha * beta)
            y = codes if factor == 1.0 else fake_quant(codes * factor,
                                                       *saturating_range(alpha, levels))
        return context.staircase_output(y, 1, alpha, levels)


def _is_addition(layer):
    """An ``Add`` layer, or a tensor plus a constant."""
    operation = scalar_operation(layer)
    return layer_class(layer) == "Add" or (operation is not None and operation[0] == "Add")

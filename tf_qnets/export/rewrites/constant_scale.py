"""Rewrite: an int8 tensor multiplied (or divided) by a positive constant keeps its codes.

Matches a ``keras.ops`` multiplication of one tensor by a positive scalar constant, or its
division by one (``* (1 / 6)`` after the staircase of MobileNetV3's hard sigmoid
``relu6(x + 3) / 6``). Emits, when the graph is traced and the input is an int8 tensor of
range ``[lo, hi]``, the product with the range ``[c lo, c hi]``: TFLite's MUL then
requantizes by exactly 1, so every code, and the level multiplier a staircase's output
carries, stays as it was. Otherwise (calibration, a float input) the product with a
calibrated range.

Example: a staircase output with codes ``0 .. 15`` at scale ``alpha`` times ``1 / 6`` is the
same codes at scale ``alpha / 6``, where a calibrated range would round them again.
"""

from tf_qnets.export.activations import fake_quant
from tf_qnets.export.emit import SCALE_KEEPING_OPS
from tf_qnets.export.layers import scalar_operation
from tf_qnets.export.rewrites.layer_call import LayerCall, call_layer

__all__ = ["ConstantScale"]


def _factor(layer):
    """The positive factor ``c`` of ``x * c``, ``c * x`` or ``x / c``, else None."""
    operation = scalar_operation(layer)
    if operation is None:
        return None
    name, constant = operation
    if name == "Multiply" and constant > 0:
        return constant
    if name in ("TrueDivide", "Divide") and constant > 0:
        return 1.0 / constant
    return None


class ConstantScale:
    name = "constant scale"
    order = 15

    def plan(self, plan):
        for node in plan.nodes:
            if (_factor(node.layer) is not None and len(node.flat_input_ids) == 1
                    and node.layer.name not in plan.outputs):
                plan.claim(node, self)

    def emit(self, node, values, context):
        x = values[node.flat_input_ids[0]]
        found = (context.int8_range(x, SCALE_KEEPING_OPS) if context.quantize and context.tracing
                 else None)
        if found is None:
            return LayerCall().emit(node, values, context)
        factor = _factor(node.layer)
        y = fake_quant(call_layer(node, values, context), found[0] * factor, found[1] * factor)
        if context.source(x, SCALE_KEEPING_OPS).name in context.code_multipliers:
            return context.staircase_output(y, context.input_code_multiplier(x))
        return y

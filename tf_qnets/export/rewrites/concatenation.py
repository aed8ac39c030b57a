"""Rewrite: a Concatenate whose inputs keep the ranges the Keras model gave them.

Matches a ``Concatenate`` with an int8 output range. TFLite's int8 CONCATENATION reads every
input at the output's scale, and the converter gets there by giving an input that nothing
else reads the concatenation's scale instead of its own: a staircase or a fixed int8 range
before it would then be computed on the wrong grid (its codes change; measured: 45% of a
concatenated staircase's values off). Emits, for each input whose own range the model
fixes (a staircase or an int8 output quantizer, possibly behind scale-keeping layers) and
differs from the concatenation's, a MUL by ``1 + 2**-20`` onto the concatenation's range,
the rounding Keras makes too (its output quantizer rounds the concatenated values). An input
with a calibrated range (a linear convolution read only here: DenseNet) is left to the
converter: computed at the concatenation's scale directly, it is rounded once, as in Keras.
"""

import numpy as np

from tf_qnets.core.layer_kinds import SCALE_KEEPING
from tf_qnets.core.lowering import FINER_INPUT_FACTOR
from tf_qnets.export.activations import fake_quant
from tf_qnets.export.layers import layer_class
from tf_qnets.export.rewrites.layer_call import LayerCall, call_layer

__all__ = ["Concatenation"]


def _fixed_range_origin(plan, tensor_id):
    """True when the model fixes the range of ``tensor_id``: it is a staircase's or an int8
    output quantizer's output, possibly behind layers that keep the scale."""
    node = plan.producer.get(tensor_id)
    while node is not None and node.layer.name not in plan.outputs:
        if layer_class(node.layer) not in SCALE_KEEPING or len(node.flat_input_ids) != 1:
            return False
        node = plan.producer.get(node.flat_input_ids[0])
    return node is not None


class Concatenation:
    name = "concatenation"
    order = 16

    def plan(self, plan):
        for node in plan.nodes:
            kind, _ = plan.outputs.get(node.layer.name, (None, None))
            if layer_class(node.layer) == "Concatenate" and kind == "int8":
                plan.claim(node, self)

    def emit(self, node, values, context):
        if not (context.quantize and context.tracing):
            return LayerCall().emit(node, values, context)
        lo, hi = context.plan.outputs[node.layer.name][1]
        moved = dict(values)
        for tensor_id in node.flat_input_ids:
            x = values[tensor_id]
            found = context.int8_range(x)
            if (found is None or not _fixed_range_origin(context.plan, tensor_id)
                    or np.allclose(found, (lo, hi))):
                continue
            # a real op that requantizes: a FakeQuant right after another is dropped
            moved[tensor_id] = fake_quant(x * FINER_INPUT_FACTOR, lo, hi)
        return context.output(node.layer, call_layer(node, moved, context))

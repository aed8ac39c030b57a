"""Rewrite: any layer no other rewrite takes, called as Keras calls it at inference.

Matches every node (the other rewrites take nodes over from it). Emits the layer's call
(its TensorFlow implementation rebuilt from the description, ``training=False``) on the
emitted inputs, then the layer's output quantizer: its lowered
staircase, its int8 range, or a range calibrated on the representative data (Add,
Concatenate, float layers).
"""

__all__ = ["LayerCall", "call_layer"]


def call_layer(node, values, context):
    """``node``'s layer (its TensorFlow implementation, :meth:`ExportPlan.tf_layer`) called
    on the emitted inputs as Keras calls it at inference."""
    layer = context.plan.tf_layer(node.layer)
    inputs = [values[tensor_id] for tensor_id in node.flat_input_ids]
    # a described operator of several tensors (``x + y``: class "op.Add") reads them by position
    if not node.inputs_as_list and not (len(inputs) > 1 and node.layer.class_name.startswith("op.")):
        inputs = inputs[0]
    return layer(inputs, training=False)


class LayerCall:
    name = "layer call"
    order = 0

    def plan(self, plan):
        for node in plan.nodes:
            plan.claim(node, self)

    def emit(self, node, values, context):
        return context.output(node.layer, call_layer(node, values, context))

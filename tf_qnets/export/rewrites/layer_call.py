"""Rewrite: any layer no other rewrite takes, called as Keras calls it at inference.

Matches every node (the other rewrites take nodes over from it). Emits the layer's own call
(``training=False``) on the emitted inputs, then the layer's output quantizer: its lowered
staircase, its int8 range, or a range calibrated on the representative data (Add,
Concatenate, float layers).
"""

from tf_qnets.export.layers import inner

__all__ = ["LayerCall", "call_layer"]


def call_layer(node, values):
    """``node``'s layer called on the emitted inputs as Keras calls it at inference."""
    layer = inner(node.layer)
    args, kwargs = node.map_arguments({k: [v] * 64 for k, v in values.items()})
    if "training" in getattr(layer, "_call_spec").arg_names:
        kwargs["training"] = False
    return layer(*args, **kwargs)


class LayerCall:
    name = "layer call"
    order = 0

    def plan(self, plan):
        for node in plan.nodes:
            plan.claim(node, self)

    def emit(self, node, values, context):
        return context.output(node.layer, call_layer(node, values))

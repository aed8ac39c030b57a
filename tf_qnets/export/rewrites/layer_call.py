"""Rewrite: any layer no other rewrite takes, called as Keras calls it at inference.

Matches every node (the other rewrites take nodes over from it). Emits the layer's own call
(``training=False``) on the emitted inputs, then the layer's output quantizer: its lowered
staircase, its int8 range, or a range calibrated on the representative data (Add,
Concatenate, float layers).
"""

from tf_qnets.export.layers import inner

__all__ = ["LayerCall"]


class LayerCall:
    name = "layer call"
    order = 0

    def plan(self, plan):
        for node in plan.nodes:
            plan.claim(node, self)

    def emit(self, node, values, context):
        layer = node.layer
        args, kwargs = node.map_arguments({k: [v] * 64 for k, v in values.items()})
        if "training" in getattr(inner(layer), "_call_spec").arg_names:
            kwargs["training"] = False
        return context.output(layer, inner(layer)(*args, **kwargs))

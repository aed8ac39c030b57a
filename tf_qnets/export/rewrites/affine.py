"""Rewrite: an unfolded BatchNormalization, Rescaling or Normalization as ``x * scale + offset``.

Matches those layers when not wrapped by tf_qnets (a BatchNormalization right after a linear
kernel layer is folded instead: :mod:`.batch_norm_fold` takes it over). Emits a MUL and an
ADD: TFLite has no int8 op for the pair, so the product gets a calibrated range too (a tensor
without one would stay float); the sum then goes through the layer's output quantizer or a
calibrated range.
"""

from tf_qnets.keras2.backend import tf
from tf_qnets.export.layers import affine_factors

__all__ = ["Affine"]


class Affine:
    name = "affine"
    order = 20

    def plan(self, plan):
        factors = plan.note(self.name)
        for node in plan.nodes:
            if node.layer.quantized:
                continue
            found = affine_factors(node.layer)
            if found is not None:
                factors[node.layer.name] = found
                plan.claim(node, self)

    def emit(self, node, values, context):
        layer = node.layer
        scale, offset = context.plan.note(self.name)[layer.name]
        x = values[node.flat_input_ids[0]]
        y = context.calibrated(f"{layer.name}/scaled", x * tf.constant(scale, x.dtype))
        return context.output(layer, y + tf.constant(offset, x.dtype))

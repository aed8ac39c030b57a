"""Rewrite: an unfolded BatchNormalization, Rescaling or Normalization as ``x * scale + offset``.

Matches those layers when not wrapped by tf_qnets, and a ``Rescaling`` or ``Normalization``
the model gave an int8 output (the pixel scaling of MobileNetV3 and EfficientNet; a BatchNormalization right after a
linear kernel layer is folded instead: :mod:`.batch_norm_fold` takes it over; a per-channel
Normalization or Rescaling with an int8 output on a 4-D input is a depthwise convolution:
:mod:`.channel_affine`). Emits a MUL and
an ADD. TFLite has no int8 op for the pair, so the product needs an int8 range of its own:
for one positive scale ``a`` on an int8 input of range ``[lo, hi]``, the range
``[a lo, a hi]`` keeps every code (the MUL requantizes by exactly 1), and the ADD rounds the
sum once, to the layer's int8 output range, as the Keras model's output quantizer does;
otherwise (per-channel factors, a float input) the product gets a calibrated range. A
``Normalization`` with mean 0 and variance 1 emits nothing
(:func:`tf_qnets.core.bias_lattice.is_identity_normalization`, which the bias lattices
look through too).
"""

import warnings

import numpy as np

from tf_qnets.core.network_graph import is_identity_normalization
from tf_qnets.keras2.backend import tf
from tf_qnets.export.activations import fake_quant
from tf_qnets.export.emit import SCALE_KEEPING_OPS
from tf_qnets.export.layers import affine_factors

__all__ = ["Affine"]

_TWO_ROUNDINGS = (
    "Layer {name!r} (Normalization with per-channel statistics) runs in the TFLite file as an "
    "int8 MUL and ADD, each rounded to int8, where the Keras model rounds it once (or not "
    "at all): the file's codes can part from the Keras model's from here on, the more so in "
    "a deep network (docs/export.md, 'What stays approximate'; on a 4-D channels-last input "
    "with an int8 output the file computes it exactly, as a 1x1 depthwise convolution). "
    "Pass `verify_data=` to export_tflite to measure how often the file agrees with the "
    "Keras model.")


class Affine:
    name = "affine"
    order = 20

    def plan(self, plan):
        factors = plan.note(self.name)
        for node in plan.nodes:
            layer = node.layer
            kind, _ = plan.outputs.get(layer.name, (None, None))
            if layer.quantized and not (layer.class_name in ("Rescaling", "Normalization")
                                        and kind == "int8"):
                continue
            found = affine_factors(layer)
            if found is not None:
                factors[layer.name] = found
                plan.claim(node, self)

    def emit(self, node, values, context):
        layer = node.layer
        scale, offset = context.plan.note(self.name)[layer.name]
        x = values[node.flat_input_ids[0]]
        if is_identity_normalization(layer):
            return x          # mean 0 and variance 1 (no weights loaded): no op
        y = _exact_product(context, x, scale)
        if y is None:
            if context.tracing and layer.class_name == "Normalization":
                warnings.warn(_TWO_ROUNDINGS.format(name=layer.name), stacklevel=2)
            y = context.calibrated(f"{layer.name}/scaled", x * tf.constant(scale, x.dtype))
        return context.output(layer, y + tf.constant(offset, x.dtype))


def _exact_product(context, x, scale):
    """``x * scale`` on the int8 grid of ``x`` scaled (codes unchanged) for one positive
    ``scale`` and an int8 ``x`` while tracing; else None."""
    if not context.tracing or np.size(scale) != 1 or float(np.ravel(scale)[0]) <= 0.0:
        return None
    found = context.int8_range(x, SCALE_KEEPING_OPS)
    if found is None:
        return None
    a = float(np.ravel(scale)[0])
    return fake_quant(x * np.float32(a), found[0] * a, found[1] * a)

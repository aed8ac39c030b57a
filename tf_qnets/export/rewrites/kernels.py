"""Rewrite: a kernel layer (Conv1D, Conv2D, DepthwiseConv2D, Dense) with pinned weight codes.

Matches every kernel layer. Planning pins its kernel (:mod:`tf_qnets.core.weight_codes`) so that
TFLite stores exactly the trained codes (low-bit layers), the trained int8 codes
(``first_last="int8"`` layers) or ordinary per-channel int8 codes (layers Keras kept float),
with a BatchNormalization folded in where :mod:`.batch_norm_fold` planned one. A
``DepthwiseConv2D`` is pinned as a ``(kh, kw, 1, channels)`` kernel with one scale per output
channel (so a following BN folds) and reshaped back when emitted. Emits the convolution (or
a Dense as a 1x1 CONV_2D when its scales are per channel), its activation, then its output
quantizer; the output gets no calibrated range of its own when every reader is a ReLU whose
quantizer fixes the range (TFLite fuses that ReLU into the kernel op).

The helpers :func:`emit_kernel`, :func:`emit_activation`, :func:`pinned_kernel` and
:func:`weight_steps` serve the other rewrites that emit a kernel layer (aligned staircases,
per-threshold copies, pooled Dense).
"""

import dataclasses

import numpy as np

from tf_qnets.keras2.backend import tf
from tf_qnets.core.layer_kinds import KERNEL_ATTRIBUTES
from tf_qnets.export.layers import is_plain_relu, layer_class
from tf_qnets.export.rewrites.batch_norm_fold import BatchNormFold, folded_bn_names
from tf_qnets.core.weight_codes import finer_codes, pin_layer_kernel, weight_steps
from tf_qnets.export.tf_layers import activation_function, build_layer

__all__ = ["Kernels", "calibrates_output", "emit_kernel", "emit_activation", "pinned_kernel",
           "weight_steps", "finer_codes"]


# plan note: kernel layers whose output every reader fuses (no calibrated range of its own)
_FUSED_OUTPUTS = "kernels: outputs fused into the ReLU quantizer after them"


@dataclasses.dataclass
class PinnedLayer:
    """A kernel layer ready to emit: its pinned kernel, a Keras clone to call, its activation."""

    pinned: object            # PinnedKernel
    clone: object             # the tf_keras layer rebuilt with a bias and a linear activation
    attribute: str            # the clone's kernel attribute ("kernel", "depthwise_kernel")
    activation: object        # the layer's own activation function (TensorFlow)
    activation_name: str      # ... and its name in the description
    depthwise_shape: tuple = None   # (kh, kw, in, multiplier) for DepthwiseConv2D


class Kernels:
    name = "kernels"
    order = 40

    def plan(self, plan):
        folds = plan.note(BatchNormFold.name)
        pins = plan.note(self.name)
        skip = plan.note(_FUSED_OUTPUTS)
        for node in plan.nodes:
            if layer_class(node.layer) not in KERNEL_ATTRIBUTES:
                continue
            if int(node.layer.config.get("groups", 1) or 1) != 1:
                raise ValueError(
                    f"Layer {node.layer.name!r} is a grouped convolution (groups="
                    f"{node.layer.config['groups']}, as in RegNet); export_tflite lowers "
                    "convolutions with groups=1 only. Split it into one Conv2D per group "
                    "joined by a Concatenate to export it.")
            pins[node.layer.name] = _pin(node.layer, folds.get(node.layer.name), plan.int4_weights)
            bn = folds.get(node.layer.name)
            if _feeds_only_fused_quantizers(plan, node) or (bn is not None and bn.name in plan.outputs):
                # no range of its own: fused into the ReLU quantizer, or the folded BN's range
                skip[node.layer.name] = True
            plan.claim(node, self)

    def emit(self, node, values, context):
        layer = node.layer
        pinned = pinned_kernel(context, layer.name)
        if context.tracing and pinned.levels is not None and pinned.num_bits == 8:
            # Low-bit codes stored in int8 as k * code: the same kernel with a k times finer
            # weight scale, so the int32 bias (rounded to one accumulator unit, input scale
            # times weight scale) is k times closer to the trained one. With ternary weights
            # read from a 2-bit staircase the plain unit is about 0.1, more than one int8
            # step of a linear output (a residual branch before its Add).
            context.pinned_overrides[layer.name] = finer_codes(pinned)
        x = context.finer_input(values[node.flat_input_ids[0]], layer)
        pinned = pinned_kernel(context, layer.name)
        context.record_bias_lattice(layer.name, x, pinned, weight_steps(pinned))
        x = emit_kernel(context, layer, x)
        x = emit_activation(context, layer, x)
        return context.output(layer, x, calibrate=calibrates_output(context.plan, layer.name))



def calibrates_output(plan, layer_name):
    """False for a kernel layer whose readers all fuse into it (see
    :func:`_feeds_only_fused_quantizers`): its output gets no calibrated range of its own."""
    return layer_name not in plan.note(_FUSED_OUTPUTS)


def _feeds_only_fused_quantizers(plan, node):
    """True when every reader of a kernel layer's output (looking through a folded BN) is a
    ReLU whose output quantizer fixes the range: TFLite fuses that ReLU into the kernel op,
    so a calibrated range in between would only add a rounding."""
    tensor_id = node.flat_output_ids[0]
    next_nodes = plan.readers.get(tensor_id, [])
    if len(next_nodes) == 1 and next_nodes[0].layer.name in folded_bn_names(plan):
        tensor_id = next_nodes[0].flat_output_ids[0]
        next_nodes = plan.readers.get(tensor_id, [])
    if not next_nodes or len(next_nodes) != plan.consumers.get(tensor_id, 0):
        return False
    return all(is_plain_relu(reader.layer) and reader.layer.output_quantizer is not None
               for reader in next_nodes)


def _pin(layer, bn, int4_weights):
    pinned, depthwise_shape = pin_layer_kernel(layer, bn, int4_weights)
    clone = build_layer(layer, weights=False, use_bias=True, activation="linear")
    activation = activation_function(layer.activation, layer.name)
    return PinnedLayer(pinned, clone, KERNEL_ATTRIBUTES[layer.class_name], activation,
                       layer.activation or "linear", depthwise_shape)


def pinned_kernel(context, layer_name):
    """The layer's PinnedKernel, as the emitting walk may have re-stored it (:func:`finer_codes`)."""
    if layer_name in context.pinned_overrides:
        return context.pinned_overrides[layer_name]
    return context.plan.note(Kernels.name)[layer_name].pinned


def _fake_quant_kernel(values, lo, hi, num_bits, per_channel, name):
    if per_channel:
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            tf.constant(values), lo, hi, num_bits=num_bits, narrow_range=True, name=name)
    return tf.quantization.fake_quant_with_min_max_vars(
        tf.constant(values), lo, hi, num_bits=num_bits, narrow_range=True, name=name)


def emit_kernel(context, layer, x, bias_shift=0.0, gain=1.0, bias_override=None):
    """The pinned kernel layer without its activation, computing ``gain * (z - bias_shift)``
    (``gain`` a number or one factor per output channel; ``bias_override``: the bias to use).

    A per-threshold copy (:mod:`.staircase_copies`) subtracts the threshold in the bias; a
    distinct ``gain`` per copy (kernel, its quantization range and bias all scaled, so the
    stored codes do not change) keeps the converter from merging the copies into one float
    convolution followed by float bias additions.
    """
    entry = context.plan.note(Kernels.name)[layer.name]
    pinned = pinned_kernel(context, layer.name)
    bias = ((np.asarray(pinned.bias, np.float64) - bias_shift) * gain).astype(np.float32)
    if bias_override is not None:
        bias = np.asarray(bias_override, np.float32)
    clone, attribute = entry.clone, entry.attribute
    lo = (np.asarray(pinned.range_min, np.float64) * gain).astype(np.float32)
    hi = (np.asarray(pinned.range_max, np.float64) * gain).astype(np.float32)
    kernel_values = (np.asarray(pinned.kernel, np.float64) * gain).astype(np.float32)
    per_channel = np.ndim(lo) > 0 and not (np.all(lo == lo.flat[0]) and np.all(hi == hi.flat[0]))
    if not per_channel:
        lo, hi = float(np.min(lo)), float(np.max(hi))
    shape = entry.depthwise_shape
    if not context.quantize:
        kernel = tf.constant(kernel_values)
        setattr(clone, attribute, kernel if shape is None else tf.reshape(kernel, shape))
        clone.bias = tf.constant(bias)
        return clone.call(x)
    name = f"{layer.name}/pinned_kernel"
    if layer_class(layer) == "Dense" and per_channel and len(x.shape) == 2:
        # TFLite stores FULLY_CONNECTED weights transposed, which a per-channel range on the
        # last axis cannot follow; a 1x1 CONV_2D keeps per-channel int8 weights exact.
        kernel = _fake_quant_kernel(kernel_values[None, None], lo, hi, pinned.num_bits, True, name)
        y = tf.nn.conv2d(tf.reshape(x, [-1, 1, 1, x.shape[-1]]), kernel, strides=1,
                         padding="VALID")
        y = tf.nn.bias_add(y, tf.constant(bias))
        return tf.reshape(y, [-1, pinned.kernel.shape[-1]])
    if layer_class(layer) == "Conv1D":
        return _conv1d_as_conv2d(clone, kernel_values, bias, x, lo, hi, per_channel, name,
                                 pinned.num_bits)
    kernel = _fake_quant_kernel(kernel_values, lo, hi, pinned.num_bits, per_channel, name)
    setattr(clone, attribute, kernel if shape is None else tf.reshape(kernel, shape))
    clone.bias = tf.constant(bias)
    return clone.call(x)


def _conv1d_as_conv2d(clone, kernel_values, bias, x, lo, hi, per_channel, name, num_bits):
    """Conv1D written as a height-1 Conv2D: the converter's own Conv1D lowering reshapes a
    per-channel quantized kernel and loses its channel axis."""
    if clone.padding == "causal" or clone.groups != 1 or clone.data_format != "channels_last":
        raise ValueError(
            f"Layer {clone.name!r}: export supports Conv1D with padding 'same'/'valid', "
            "groups=1 and channels_last.")
    kernel = _fake_quant_kernel(kernel_values[None], lo, hi, num_bits, per_channel, name)
    y = tf.nn.conv2d(tf.expand_dims(x, 1), kernel, strides=[1, 1, clone.strides[0], 1],
                     padding=clone.padding.upper(), dilations=[1, 1, clone.dilation_rate[0], 1])
    y = tf.nn.bias_add(y, tf.constant(bias))
    return tf.squeeze(y, 1)


def emit_activation(context, layer, x):
    """The kernel layer's activation; a range before anything TFLite cannot fuse (softmax, ...).

    A ReLU before a staircase whose levels start at 0 or above is left out: the lowered
    staircase clamps below its first level anyway (and the converter mis-handles the pair).
    """
    entry = context.plan.note(Kernels.name)[layer.name]
    activation, name = entry.activation, entry.activation_name
    kind, values = context.plan.outputs.get(layer.name, (None, None))
    if name == "relu" and kind == "staircase" and values[3].levels[0] >= 0:
        return x
    if name in ("linear", "relu", "relu6"):
        return activation(x)
    return activation(context.calibrated(f"{layer.name}/preactivation", x))

"""Rewrite: ``Dense(GlobalAveragePooling2D(x))`` as one VALID convolution over the whole map.

Matches a GlobalAveragePooling2D (channels last, no output quantizer, static spatial size)
read only, possibly through inference identities (``Dropout``, ...), by a Dense layer, or,
with ``keepdims=True``, by a 1x1 ``Conv2D`` with stride 1 (MobileNet's classifier), that
reads nothing else and is not lowered to per-threshold copies, while the tiled kernel has at
most :data:`MAX_TILED_POOLING_WEIGHTS` weights; it takes over those nodes. Emits one CONV_2D
whose kernel ``W / (H W)`` is tiled over the ``H x W`` positions with its quantization range
divided by ``H W`` too, so the stored codes are the Dense layer's own codes and the int32
accumulator holds the exact sum: the mean is never rounded to int8. When a staircase follows
the layer (squeeze-and-excitation's ReLU), that convolution is scaled and biased to be the
staircase's own requantization, as :mod:`.aligned_staircase` does for any kernel layer, with
the accumulator unit ``s_in s_w / (H W)``. ``quantize_model`` gives a pooling read only by
convolutions inside the network (squeeze-and-excitation) an int8 output range, which this
rewrite leaves to TFLite's MEAN: with that unit many of those staircases have no alignment.
"""

import numpy as np

from tf_qnets.core.layer_kinds import INFERENCE_IDENTITIES
from tf_qnets.keras2.backend import tf
from tf_qnets.export.layers import layer_class
from tf_qnets.export.rewrites.kernels import (
    Kernels,
    calibrates_output,
    emit_activation,
    pinned_kernel,
)
from tf_qnets.export.rewrites.aligned_staircase import pooled_alignment
from tf_qnets.export.rewrites.layer_call import LayerCall

__all__ = ["PooledDense", "MAX_TILED_POOLING_WEIGHTS"]

# A 7x7 map before a 1280x1000 classifier would store 63M weights: folded only below this.
MAX_TILED_POOLING_WEIGHTS = 1 << 20


class _Pooled:
    """A global average pooling left to the Dense layer after it."""

    def __init__(self, inputs):
        self.inputs = inputs


class PooledDense:
    name = "pooled dense"
    order = 70

    def plan(self, plan):
        pins = plan.note(Kernels.name)
        for node in plan.nodes:
            pooling = node.layer
            if (pooling.class_name != "GlobalAveragePooling2D"
                    or pooling.config.get("data_format", "channels_last") != "channels_last"
                    or pooling.name in plan.outputs):
                continue
            shape = node.layer.input_shape
            if len(shape) != 4 or shape[1] is None or shape[2] is None:
                continue
            user, identities = _reader_through_identities(plan, node.flat_output_ids[0])
            if (user is None or len(user.flat_input_ids) != 1
                    or not _pools_into(user.layer, pooling.config.get("keepdims", False))
                    or user.layer.name not in pins
                    or plan.claimed_by(user.layer.name, "staircase copies")):
                continue
            tiled = int(shape[1]) * int(shape[2]) * int(np.prod(pins[user.layer.name].pinned.kernel.shape))
            if tiled > MAX_TILED_POOLING_WEIGHTS:
                continue
            for claimed in [node, *identities, user]:
                plan.claim(claimed, self)

    def emit(self, node, values, context):
        layer = node.layer
        x = values[node.flat_input_ids[0]]
        if layer.name not in context.plan.note(Kernels.name):   # the pooling or an identity
            if isinstance(x, _Pooled):                     # an identity: the pooled map passes
                return x
            return _Pooled(x) if context.quantize else LayerCall().emit(node, values, context)
        if not isinstance(x, _Pooled):                                   # float network
            return Kernels().emit(node, values, context)
        area = float(int(x.inputs.shape[1]) * int(x.inputs.shape[2]))
        aligned = pooled_alignment(context, layer, x.inputs, area)
        gain, bias = aligned if aligned is not None else (1.0, None)
        y = emit_activation(context, layer, _pooled_dense(context, layer, x.inputs, gain, bias))
        if aligned is not None and layer.name in context.prescaled.values():
            # the staircase after it is this convolution's own requantization (squeeze-and-
            # excitation's ReLU in MobileNetV3): no range in between
            return y
        return context.output(layer, y, calibrate=calibrates_output(context.plan, layer.name))


def _reader_through_identities(plan, tensor_id):
    """``(node, identities)``: the one node reading ``tensor_id``, looking through inference
    identities (``Dropout``, ...; returned too), or ``(None, [])``."""
    identities = []
    user = plan.only_reader(tensor_id)
    while (user is not None and layer_class(user.layer) in INFERENCE_IDENTITIES
           and len(user.flat_input_ids) == 1 and user.layer.name not in plan.outputs):
        identities.append(user)
        user = plan.only_reader(user.flat_output_ids[0])
    return user, identities


def _pools_into(layer, keepdims):
    """True for a Dense layer after a pooling without ``keepdims``, or a 1x1, stride-1,
    ungrouped Conv2D after one with it."""
    if layer_class(layer) == "Dense":
        return not keepdims
    config = layer.config
    return (keepdims and layer_class(layer) == "Conv2D"
            and tuple(config.get("kernel_size", ())) == (1, 1)
            and tuple(config.get("strides", ())) == (1, 1)
            and tuple(config.get("dilation_rate", (1, 1))) == (1, 1)
            and config.get("groups", 1) == 1
            and config.get("data_format", "channels_last") == "channels_last")


def _pooled_dense(context, layer, x, gain=1.0, bias=None):
    """The pooled kernel layer over ``x``, computing ``gain * z`` per channel with ``bias``
    (the pinned bias when None) as :func:`.kernels.emit_kernel` does."""
    pinned = pinned_kernel(context, layer.name)
    height, width = int(x.shape[1]), int(x.shape[2])
    area = float(height * width)
    dense = np.asarray(pinned.kernel, np.float64)
    dense = dense.reshape(dense.shape[-2], dense.shape[-1])     # a 1x1 Conv2D's too
    gain = np.asarray(gain, np.float64)
    kernel = np.tile(dense[None, None] * gain / area, [height, width, 1, 1]).astype(np.float32)
    lo = (np.asarray(pinned.range_min, np.float64) * gain / area).astype(np.float32)
    hi = (np.asarray(pinned.range_max, np.float64) * gain / area).astype(np.float32)
    bias = np.asarray(pinned.bias if bias is None else bias, np.float32)
    kernel = tf.constant(kernel)
    name = f"{layer.name}/pinned_kernel"
    if np.ndim(lo) > 0:
        kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            kernel, lo, hi, num_bits=pinned.num_bits, narrow_range=True, name=name)
    else:
        kernel = tf.quantization.fake_quant_with_min_max_vars(
            kernel, lo, hi, num_bits=pinned.num_bits, narrow_range=True, name=name)
    y = tf.nn.conv2d(x, kernel, strides=1, padding="VALID")
    y = tf.nn.bias_add(y, tf.constant(bias))
    if layer_class(layer) == "Conv2D":           # after a keepdims pooling: (N, 1, 1, C)
        return y
    return tf.reshape(y, [-1, kernel.shape[-1]])

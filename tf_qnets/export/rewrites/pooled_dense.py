"""Rewrite: ``Dense(GlobalAveragePooling2D(x))`` as one VALID convolution over the whole map.

Matches a GlobalAveragePooling2D (channels last, no keepdims, no output quantizer, static
spatial size) read only by a Dense layer that reads nothing else and is not lowered to
per-threshold copies, while the tiled kernel has at most :data:`MAX_TILED_POOLING_WEIGHTS`
weights; it takes over both nodes. Emits one CONV_2D whose kernel ``W / (H W)`` is tiled over the
``H x W`` positions with its quantization range divided by ``H W`` too, so the stored codes
are the Dense layer's own codes and the int32 accumulator holds the exact sum: the mean is
never rounded to int8.
"""

import numpy as np

from tf_qnets.keras2.backend import tf
from tf_qnets.export.layers import layer_class
from tf_qnets.export.rewrites.kernels import (
    Kernels,
    calibrates_output,
    emit_activation,
    pinned_kernel,
)
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
                    or pooling.config.get("keepdims", False)
                    or pooling.config.get("data_format", "channels_last") != "channels_last"
                    or pooling.name in plan.outputs):
                continue
            shape = node.layer.input_shape
            if len(shape) != 4 or shape[1] is None or shape[2] is None:
                continue
            user = plan.only_reader(node.flat_output_ids[0])
            if (user is None or layer_class(user.layer) != "Dense" or len(user.flat_input_ids) != 1
                    or user.layer.name not in pins
                    or plan.claimed_by(user.layer.name, "staircase copies")):
                continue
            tiled = int(shape[1]) * int(shape[2]) * int(np.prod(pins[user.layer.name].pinned.kernel.shape))
            if tiled > MAX_TILED_POOLING_WEIGHTS:
                continue
            plan.claim(node, self)
            plan.claim(user, self)

    def emit(self, node, values, context):
        layer = node.layer
        x = values[node.flat_input_ids[0]]
        if layer.name not in context.plan.note(Kernels.name):          # the pooling
            return _Pooled(x) if context.quantize else LayerCall().emit(node, values, context)
        if not isinstance(x, _Pooled):                                   # float network
            return Kernels().emit(node, values, context)
        y = emit_activation(context, layer, _pooled_dense(context, layer, x.inputs))
        return context.output(layer, y, calibrate=calibrates_output(context.plan, layer.name))


def _pooled_dense(context, layer, x):
    pinned = pinned_kernel(context, layer.name)
    height, width = int(x.shape[1]), int(x.shape[2])
    area = float(height * width)
    kernel = np.tile(np.asarray(pinned.kernel, np.float64)[None, None] / area,
                     [height, width, 1, 1]).astype(np.float32)
    lo = (np.asarray(pinned.range_min, np.float64) / area).astype(np.float32)
    hi = (np.asarray(pinned.range_max, np.float64) / area).astype(np.float32)
    kernel = tf.constant(kernel)
    name = f"{layer.name}/pinned_kernel"
    if np.ndim(lo) > 0:
        kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            kernel, lo, hi, num_bits=pinned.num_bits, narrow_range=True, name=name)
    else:
        kernel = tf.quantization.fake_quant_with_min_max_vars(
            kernel, lo, hi, num_bits=pinned.num_bits, narrow_range=True, name=name)
    y = tf.nn.conv2d(x, kernel, strides=1, padding="VALID")
    y = tf.nn.bias_add(y, tf.constant(pinned.bias))
    return tf.reshape(y, [-1, kernel.shape[-1]])

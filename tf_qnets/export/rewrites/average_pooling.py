"""Rewrite: an average pooling with an int8 output of its own, as a depthwise convolution.

Matches an ``AveragePooling2D`` (channels last, no window past the border) that carries an int8
output range (``quantize_model`` gives it one where the file stores its output: DenseNet's
transitions, read by the next block's BN and by its concatenation). The Keras hard model
rounds the mean once, to that range:

    y = s_out * round(mean(q_in s_in) / s_out)      (mean over the ``k = kh kw`` window)

TFLite's int8 ``AVERAGE_POOL_2D`` keeps its input's scale, so it would round the mean to the
input grid first (a mean of 4 codes is a tie for one value in four). This rewrite replaces the
pooling's description in the plan by a linear ``DepthwiseConv2D`` with the pool's window and
strides, every weight ``1 / k`` and no bias: its int8 weight is ``127`` at the per-channel
scale ``1 / (127 k)`` (exact), the int32 accumulator holds ``127`` times the window's sum of
codes, and its requantization rounds the mean once, to the Keras range. Emits nothing itself
(:mod:`.kernels` emits the depthwise layer). A ``padding="same"`` window that reaches past
the border is divided by the number of its elements inside, which a convolution cannot:
``quantize_model`` gives such a pooling no int8 range and it keeps TFLite's op.

Example::

    depthwise = as_depthwise_pooling(pool_description)   # kernel (2, 2, C, 1) of 0.25
"""

import dataclasses

import numpy as np

from tf_qnets.core.layer_kinds import pooling_pads_border, pooling_window
from tf_qnets.core.network import Int8Range

__all__ = ["AveragePoolingDepthwise", "as_depthwise_pooling"]


def as_depthwise_pooling(layer):
    """The description of a linear ``DepthwiseConv2D`` computing the ``AveragePooling2D``
    ``layer`` (same name, input and output quantizer; no window past the border)."""
    pool, strides = pooling_window(layer.config)
    channels = int(layer.input_shape[-1])
    kernel = np.full(pool + (channels, 1), 1.0 / (pool[0] * pool[1]), np.float32)
    config = {"name": layer.name, "kernel_size": pool, "strides": strides,
              "padding": "valid", "depth_multiplier": 1, "data_format": "channels_last",
              "dilation_rate": (1, 1), "activation": "linear", "use_bias": False}
    return dataclasses.replace(layer, class_name="DepthwiseConv2D", config=config,
                               weights={"kernel": kernel}, weight_quantizer=None)


class AveragePoolingDepthwise:
    name = "average pooling depthwise"
    order = 6

    def plan(self, plan):
        replaced = plan.note(self.name)
        for node in plan.nodes:
            layer = node.layer
            if (layer.class_name != "AveragePooling2D"
                    or not isinstance(layer.output_quantizer, Int8Range)
                    or np.ndim(layer.output_quantizer.lo) != 0
                    or pooling_pads_border(layer.config, layer.input_shape)
                    or len(tuple(layer.input_shape)) != 4
                    or layer.config.get("data_format") not in (None, "channels_last")):
                continue
            node.layer = as_depthwise_pooling(layer)   # the plan's (fresh) description
            replaced[layer.name] = True

    def emit(self, node, values, context):   # never claims a node
        raise AssertionError(f"{self.name} emits nothing ({node.layer.name}).")

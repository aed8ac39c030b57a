"""The kernel layers tf_qnets quantizes in Keras 3, and their computation with a given kernel.

A quantized kernel layer computes exactly what the Keras layer's own ``call`` computes,
with the quantized kernel in place of its kernel variable::

    Dense:            activation(x @ Q(W) + b)
    Conv1D, Conv2D:   activation(conv(x, Q(W)) + b)        (groups and causal padding included)
    DepthwiseConv2D:  activation(depthwise_conv(x, Q(W)) + b)

Each is written with ``keras.ops`` (one code path for every backend, jit-compilable); the
kinds are those of :data:`tf_qnets.core.layer_kinds.KERNEL_ATTRIBUTES` (in Keras 3 every
one of them keeps its kernel in ``layer.kernel``).

Example::

    >>> import keras, numpy as np
    >>> dense = keras.layers.Dense(2, activation="relu")
    >>> dense.build((None, 3))
    >>> x = np.ones((1, 3), "float32")
    >>> y = call_with_kernel(dense, x, dense.kernel)            # equals dense(x)
"""

from keras import ops

__all__ = ["KERNEL_KINDS", "call_with_kernel", "check_kernel_layer"]

KERNEL_KINDS = ("Conv1D", "Conv2D", "Dense", "DepthwiseConv2D")


def check_kernel_layer(layer):
    """Refuse a kernel layer whose computation :func:`call_with_kernel` would not reproduce."""
    kind = type(layer).__name__
    if kind not in KERNEL_KINDS:
        raise TypeError(
            f"Layer {layer.name!r} ({kind}) has no quantized kernel computation; supported: "
            f"{', '.join(KERNEL_KINDS)}. Keep it float with `exclude=[{layer.name!r}]`.")
    if getattr(layer, "lora_enabled", False):
        raise ValueError(
            f"Layer {layer.name!r} has LoRA enabled; quantize the model before "
            "`enable_lora`, or keep the layer float with `exclude=[...]`.")
    if getattr(layer, "quantization_mode", None):
        raise ValueError(
            f"Layer {layer.name!r} is already quantized by Keras "
            f"(quantization_mode={layer.quantization_mode!r}); pass the float model.")


def _add_bias(layer, outputs, channels):
    if getattr(layer, "bias", None) is None:
        return outputs
    rank = len(outputs.shape) - 2
    if _data_format(layer) == "channels_first":
        shape = (1, channels) + (1,) * rank
    else:
        shape = (1,) * (rank + 1) + (channels,)
    return ops.add(outputs, ops.reshape(layer.bias, shape))


def _data_format(layer):
    return getattr(layer, "data_format", "channels_last") or "channels_last"


def _dense(layer, inputs, kernel):
    outputs = ops.matmul(inputs, kernel)
    if layer.bias is not None:
        outputs = ops.add(outputs, layer.bias)
    return outputs


def _conv(layer, inputs, kernel):
    padding = layer.padding
    if padding == "causal":
        left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        pads = [[0, 0], [left, 0], [0, 0]]
        if _data_format(layer) == "channels_first":
            pads = [[0, 0], [0, 0], [left, 0]]
        inputs = ops.pad(inputs, pads)
        padding = "valid"
    outputs = ops.conv(inputs, kernel, strides=list(layer.strides), padding=padding,
                       dilation_rate=layer.dilation_rate, data_format=layer.data_format)
    return _add_bias(layer, outputs, layer.filters)


def _depthwise(layer, inputs, kernel):
    outputs = ops.depthwise_conv(inputs, kernel, strides=layer.strides, padding=layer.padding,
                                 dilation_rate=layer.dilation_rate, data_format=layer.data_format)
    channels = kernel.shape[-2] * kernel.shape[-1]
    return _add_bias(layer, outputs, channels)


_COMPUTE = {"Dense": _dense, "Conv1D": _conv, "Conv2D": _conv, "DepthwiseConv2D": _depthwise}


def call_with_kernel(layer, inputs, kernel):
    """``layer``'s output on ``inputs`` computed with ``kernel`` instead of ``layer.kernel``."""
    outputs = _COMPUTE[type(layer).__name__](layer, inputs, kernel)
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs

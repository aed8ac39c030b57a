"""``QNetsWrapper``: a Keras 3 layer with its kernel and/or its output quantized.

The wrapper owns the original layer (its kernel, bias and activation, unchanged) and up to
two :class:`tf_qnets.keras3.quantizer.QNetsQuantizer` s::

    kernel layers:   y = Q_out( activation( op(x, Q_w(W)) + b ) )      (op: matmul, conv, ...)
    other layers:    y = Q_out( layer(x) )                            (ReLU, Activation, ...)

``Q_w`` replaces the kernel by its staircase in the layer's own computation
(:mod:`tf_qnets.keras3.kernels`); ``Q_out`` sits after the layer's activation, where the
paper quantizes activations (Conv - BN - ReLU - Quant, or Conv(activation="relu") - Quant).
The gradient reaches the float kernel ``W`` through ``Q_w``'s custom gradient.

Example::

    >>> import keras
    >>> from tf_qnets.keras3.quantizer import QNetsQuantizer
    >>> from tf_qnets.keras3.wrapper import QNetsWrapper
    >>> layer = QNetsWrapper(keras.layers.Dense(4, activation="relu"),
    ...                      weight_quantizer=QNetsQuantizer((-1, 0, 1), role="weights"),
    ...                      output_quantizer=QNetsQuantizer((0, 1, 2, 3), role="activations"))
    >>> y = layer(keras.ops.ones((2, 3)))
"""

import inspect

import keras

from tf_qnets.keras3.int8 import Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.keras3.kernels import call_with_kernel, check_kernel_layer
from tf_qnets.keras3.quantizer import QNetsQuantizer

__all__ = ["QNetsWrapper"]


def _quantizer(value, argument, int8_class):
    accepted = (QNetsQuantizer, int8_class)
    if value is None or isinstance(value, accepted):
        return value
    if isinstance(value, dict):
        quantizer = keras.saving.deserialize_keras_object(value)
        if isinstance(quantizer, accepted):
            return quantizer
    raise TypeError(
        f"`{argument}` must be a QNetsQuantizer, an {int8_class.__name__} or None, got {value!r}.")


@keras.saving.register_keras_serializable(package="tf_qnets")
class QNetsWrapper(keras.layers.Wrapper):
    """A layer whose kernel and/or output go through Quantization Networks staircases.

    Args:
      layer: the Keras layer (a Dense/Conv1D/Conv2D/DepthwiseConv2D when
        ``weight_quantizer`` is given; any single-input layer otherwise).
      weight_quantizer: quantizer of ``layer.kernel`` (a ``QNetsQuantizer``, or an
        :class:`tf_qnets.keras3.int8.Int8WeightQuantizer` for ``first_last="int8"``), or
        None (float kernel).
      output_quantizer: quantizer of the layer's output (a ``QNetsQuantizer`` or an
        :class:`tf_qnets.keras3.int8.Int8OutputQuantizer`), or None (float output).
      **kwargs: Keras layer arguments (``name``).
    """

    def __init__(self, layer, weight_quantizer=None, output_quantizer=None, **kwargs):
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        self.weight_quantizer = _quantizer(
            weight_quantizer, "weight_quantizer", Int8WeightQuantizer)
        self.output_quantizer = _quantizer(
            output_quantizer, "output_quantizer", Int8OutputQuantizer)
        if self.weight_quantizer is None and self.output_quantizer is None:
            raise ValueError(
                f"QNetsWrapper of layer {layer.name!r}: give a weight_quantizer, an "
                "output_quantizer or both.")
        if self.weight_quantizer is not None:
            check_kernel_layer(layer)
        self._inner_takes_mask = "mask" in inspect.signature(layer.call).parameters

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        if self.weight_quantizer is not None and not self.weight_quantizer.built:
            self.weight_quantizer.build(tuple(self.layer.kernel.shape))
        if self.output_quantizer is not None and not self.output_quantizer.built:
            self.output_quantizer.build(self.layer.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs, training=None, mask=None):
        # ``mask``: a wrapped merge layer (Add) is called back with the mask its node recorded
        if self.weight_quantizer is None:
            extra = {"mask": mask} if mask is not None and self._inner_takes_mask else {}
            outputs = self.layer(inputs, training=training, **extra)
        else:
            kernel = self.weight_quantizer(self.layer.kernel, training=training)
            outputs = call_with_kernel(self.layer, inputs, kernel)
        if self.output_quantizer is not None:
            outputs = self.output_quantizer(outputs, training=training)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def quantizers(self):
        """``[(\"weights\" | \"outputs\", quantizer)]`` of this wrapper."""
        found = []
        if self.weight_quantizer is not None:
            found.append(("weights", self.weight_quantizer))
        if self.output_quantizer is not None:
            found.append(("outputs", self.output_quantizer))
        return found

    def get_config(self):
        config = super().get_config()
        for key in ("weight_quantizer", "output_quantizer"):
            value = getattr(self, key)
            config[key] = None if value is None else keras.saving.serialize_keras_object(value)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"),
                                                      custom_objects=custom_objects)
        for key in ("weight_quantizer", "output_quantizer"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects)
        return cls(layer, **config)

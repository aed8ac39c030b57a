"""tfmot ``QuantizeConfig`` for tf_qnets: which tensor of a layer is quantized, by which quantizer.

One config describes one layer: optionally its kernel (``weight_attr``, e.g.
``"kernel"`` or ``"depthwise_kernel"``) with a weight quantizer, and optionally its
output with an output quantizer. The output quantizer sits after the layer's own
(fused) activation, which is where the paper puts activation quantization:
Conv - BN - ReLU - Quant, or Conv(activation="relu") - Quant.

Quantizers may be :class:`tf_qnets.QNetsQuantizer` (low-bit) or tfmot's own 8-bit
quantizers (for first/last layers simulated at int8).

Example::

    >>> from tf_qnets import QNetsQuantizeConfig, QNetsQuantizer
    >>> config = QNetsQuantizeConfig(
    ...     weight_attr="kernel",
    ...     weight_quantizer=QNetsQuantizer((-1, 0, 1), role="weights"),
    ...     output_quantizer=QNetsQuantizer((0, 1, 2, 3), role="activations"))
"""

from tf_qnets.keras2 import tfmot

from tf_qnets.keras2.backend import keras

__all__ = ["QNetsQuantizeConfig"]


def _serialize(obj):
    return None if obj is None else keras.utils.serialize_keras_object(obj)


def _deserialize(config):
    if config is None:
        return None
    # Local import: the quantizer classes must be registered before deserializing.
    from tf_qnets.keras2.scope import custom_objects

    return keras.utils.deserialize_keras_object(config, custom_objects=custom_objects())


@keras.utils.register_keras_serializable(package="tf_qnets")
class QNetsQuantizeConfig(tfmot.QuantizeConfig):
    """Quantize a layer's kernel and/or its output.

    Args:
      weight_attr: name of the kernel attribute (``None``: weights stay float).
      weight_quantizer: quantizer for that kernel.
      output_quantizer: quantizer for the layer's output (``None``: output stays float).
    """

    def __init__(self, weight_attr=None, weight_quantizer=None, output_quantizer=None):
        if (weight_attr is None) != (weight_quantizer is None):
            raise ValueError("`weight_attr` and `weight_quantizer` must be given together.")
        self.weight_attr = weight_attr
        self.weight_quantizer = weight_quantizer
        self.output_quantizer = output_quantizer

    def get_weights_and_quantizers(self, layer):
        if self.weight_attr is None:
            return []
        return [(getattr(layer, self.weight_attr), self.weight_quantizer)]

    def set_quantize_weights(self, layer, quantize_weights):
        if self.weight_attr is None:
            return
        if len(quantize_weights) != 1:
            raise ValueError(
                f"Layer {layer.name!r}: expected 1 quantized weight, got {len(quantize_weights)}.")
        setattr(layer, self.weight_attr, quantize_weights[0])

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_activations(self, layer, quantize_activations):
        return None

    def get_output_quantizers(self, layer):
        return [] if self.output_quantizer is None else [self.output_quantizer]

    def get_config(self):
        return {
            "weight_attr": self.weight_attr,
            "weight_quantizer": _serialize(self.weight_quantizer),
            "output_quantizer": _serialize(self.output_quantizer),
        }

    @classmethod
    def from_config(cls, config):
        return cls(
            weight_attr=config.get("weight_attr"),
            weight_quantizer=_deserialize(config.get("weight_quantizer")),
            output_quantizer=_deserialize(config.get("output_quantizer")),
        )

    def __eq__(self, other):
        return isinstance(other, QNetsQuantizeConfig) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self.__eq__(other)

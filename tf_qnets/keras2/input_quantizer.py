"""The model input's int8 rounding, made by the Keras 2 model too (``InputQuantizer``).

An integer TFLite file quantizes its float input once, ``q = clip(round(x / s) + z, -128,
127)``, with the range ``[lo, hi]`` (``s = (hi - lo) / 255``) that
:func:`tf_qnets.core.input_range.calibrated_input_range` takes from representative inputs.
A Keras model that reads ``x`` itself computes a different first layer, and a deep network
spreads those differences (measured in docs/export.md). So :func:`tf_qnets.quantize_model` puts the same
rounding in the Keras model, as tfmot does for its own 8-bit scheme: a tfmot
``QuantizeLayer`` right after each float model input, holding an :class:`InputQuantizer`::

    x -> FakeQuant8(x, lo, hi)       # TensorFlow's nudged 8-bit grid, in training too

``lo`` and ``hi`` are fixed by ``quantize_model`` from ``calibration_data``
(:func:`set_input_ranges`) and never trained; :func:`tf_qnets.export_tflite` reads them
instead of calibrating its own, so the file and the model round every input alike.

Example::

    qat = tf_qnets.quantize_model(model, w_bits=4, a_bits=4, calibration_data=x[:256])
    input_ranges(qat)          # {"input_1": (0.0, 1.0)}
"""

import numpy as np

from tf_qnets.core.input_range import calibrated_input_range
from tf_qnets.keras2 import tfmot
from tf_qnets.keras2.backend import keras, tf

__all__ = ["InputQuantizer", "InputQuantizeTransform", "input_quantize_layers", "input_ranges",
           "set_input_ranges"]


@keras.utils.register_keras_serializable(package="tf_qnets")
class InputQuantizer(tfmot.Quantizer):
    """8-bit FakeQuant of a float model input with a fixed range (see the module docstring).

    Until the range is set (``lo == hi``) it passes its input through unchanged.
    """

    def build(self, tensor_shape, name, layer):
        # tf_keras' loading may build a QuantizeLayer twice (from its config, then on the
        # first call); the range variables must exist once.
        built = getattr(self, "_built_for", None)
        if built is not None and built[0] is layer:
            return built[1]
        lo = layer.add_weight(f"{name}_input_min", shape=(), initializer="zeros",
                              trainable=False)
        hi = layer.add_weight(f"{name}_input_max", shape=(), initializer="zeros",
                              trainable=False)
        self._built_for = (layer, {"min_var": lo, "max_var": hi})
        return self._built_for[1]

    def __call__(self, inputs, training, weights, **kwargs):
        lo, hi = weights["min_var"], weights["max_var"]
        x = tf.cast(inputs, tf.float32)
        rounded = tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=8,
                                                               narrow_range=False)
        return tf.cast(tf.where(hi > lo, rounded, x), inputs.dtype)

    def get_config(self):
        return {}

    def __eq__(self, other):
        return isinstance(other, InputQuantizer)

    def __ne__(self, other):
        return not self.__eq__(other)


# tfmot registers its QuantizeLayer only inside its quantize_scope; registered here too (under
# tfmot's own name) so that a saved tf_qnets model loads with plain tf_keras load_model.
keras.utils.get_custom_objects().setdefault("QuantizeLayer", tfmot.QuantizeLayer)


def _is_float_input(layer):
    dtype = tf.as_dtype(getattr(layer, "dtype", None) or "float32")
    return dtype.is_floating


class InputQuantizeTransform(tfmot.Transform):
    """tfmot layout transform: ``InputLayer -> QuantizeLayer(InputQuantizer())`` for every
    float model input (integer inputs, token ids for an Embedding, stay as they are)."""

    def pattern(self):
        return tfmot.LayerPattern("InputLayer")

    def replacement(self, match_layer):
        if match_layer.layer["config"].get("dtype") not in (None, "float16", "float32",
                                                             "float64", "bfloat16"):
            return match_layer
        quantize = tfmot.QuantizeLayer(InputQuantizer(),
                                       name=f"{match_layer.layer['config']['name']}_int8")
        config = tfmot.serialize_layer(quantize)
        config["name"] = quantize.name
        return tfmot.LayerNode(config, input_layers=[match_layer])

    def custom_objects(self):
        return {"QuantizeLayer": tfmot.QuantizeLayer, "InputQuantizer": InputQuantizer}


def add_input_quantizers(model, layer_quantize_map):
    """tfmot's layout step: ``model`` with a ``QuantizeLayer`` after each float input."""
    candidates = set(layer_quantize_map) | {
        layer.name for layer in model._input_layers if _is_float_input(layer)}  # noqa: SLF001
    return tfmot.ModelTransformer(model, [InputQuantizeTransform()], candidates,
                                  layer_quantize_map).transform()


def input_quantize_layers(model):
    """The ``QuantizeLayer`` s holding an :class:`InputQuantizer`, in model input order, as
    ``[(input index, layer)]``."""
    found = []
    for index, tensor in enumerate(model.inputs):
        for node in tensor.node.layer._outbound_nodes:   # noqa: SLF001 - graph walk
            layer = node.outbound_layer
            if isinstance(layer, tfmot.QuantizeLayer) and isinstance(layer.quantizer,
                                                                     InputQuantizer):
                found.append((index, layer))
    return found


def input_ranges(model):
    """``{QuantizeLayer name: (lo, hi)}`` of the model's input quantizers; ``(lo, hi)`` is
    None while unset."""
    ranges = {}
    for _, layer in input_quantize_layers(model):
        lo = float(layer.quantizer_vars["min_var"].numpy())
        hi = float(layer.quantizer_vars["max_var"].numpy())
        ranges[layer.name] = (lo, hi) if hi > lo else None
    return ranges


def set_input_ranges(model, batches):
    """Fix every input quantizer's range from ``batches`` (the model inputs of
    ``calibration_data``: arrays, or per-input lists for a model with several inputs)."""
    for index, layer in input_quantize_layers(model):
        if len(model.inputs) > 1:
            values = [np.asarray(batch[index]) for batch in batches]
        else:
            values = [np.asarray(batch) for batch in batches]
        lo, hi = calibrated_input_range(values)
        layer.quantizer_vars["min_var"].assign(lo)
        layer.quantizer_vars["max_var"].assign(hi)

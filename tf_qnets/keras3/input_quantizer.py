"""The model input's int8 rounding, made by the Keras 3 model too (``InputQuantizer``).

The Keras 3 twin of :mod:`tf_qnets.keras2.input_quantizer`: an integer TFLite file
quantizes its float input once with a fixed range ``[lo, hi]``; so that the Keras model
computes the same first layer, :func:`tf_qnets.keras3.quantize_model` puts an
:class:`InputQuantizer` layer right after each float model input::

    x -> FakeQuant8(x, lo, hi)       # scale (hi - lo) / 255, zero point nudged onto the grid

``lo`` and ``hi`` are non-trainable variables fixed from ``calibration_data``
(:func:`tf_qnets.core.input_range.calibrated_input_range`, :func:`set_input_ranges`);
:func:`tf_qnets.export_tflite` reads them instead of calibrating its own. Until they are
set (``lo == hi``) the layer passes its input through.

Example::

    qat = tf_qnets.keras3.quantize_model(model, w_bits=4, a_bits=4, calibration_data=x[:256])
    input_ranges(qat)          # {"image_int8": (0.0, 1.0)}
"""

import keras
import numpy as np
from keras import ops

from tf_qnets.core.input_range import calibrated_input_range

__all__ = ["InputQuantizer", "clone_sequential_with_input_quantizer", "input_call_function",
           "input_quantize_layers", "input_ranges", "set_input_ranges"]


@keras.saving.register_keras_serializable(package="tf_qnets")
class InputQuantizer(keras.layers.Layer):
    """8-bit FakeQuant of a float model input with a fixed range (see the module docstring).

    Variables: ``min_var`` and ``max_var`` (scalars, not trainable; saved with the model).
    """

    def build(self, input_shape=None):
        self.min_var = self.add_weight(name="min_var", shape=(), trainable=False,
                                       initializer="zeros")
        self.max_var = self.add_weight(name="max_var", shape=(), trainable=False,
                                       initializer="zeros")
        self.built = True

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        low = ops.stop_gradient(ops.convert_to_tensor(self.min_var))
        high = ops.stop_gradient(ops.convert_to_tensor(self.max_var))
        rounded = keras.quantizers.fake_quant_with_min_max_vars(
            x, low, ops.maximum(high, low + 1e-8), num_bits=8, narrow_range=False)
        return ops.cast(ops.where(high > low, rounded, x), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def set_range(self, lo, hi):
        if not self.built:
            self.build()
        self.min_var.assign(float(lo))
        self.max_var.assign(float(hi))


def _is_float(tensor):
    return "float" in str(getattr(tensor, "dtype", "float32"))


def input_call_function():
    """A ``call_function`` for ``keras.models.clone_model`` (Functional models) that puts
    one :class:`InputQuantizer` between each float model input and every layer reading it."""
    quantized = {}

    def quantize(value):
        history = getattr(value, "_keras_history", None)
        if (history is None or not isinstance(history.operation, keras.layers.InputLayer)
                or not _is_float(value)):
            return value
        if id(value) not in quantized:
            quantized[id(value)] = InputQuantizer(name=f"{history.operation.name}_int8")(value)
        return quantized[id(value)]

    def call(layer, *args, **kwargs):
        args = keras.tree.map_structure(quantize, args)
        kwargs = keras.tree.map_structure(quantize, kwargs)
        return layer(*args, **kwargs)

    return call


def clone_sequential_with_input_quantizer(model, clone_function):
    """A clone of the Sequential ``model`` (each layer through ``clone_function``, as
    ``keras.models.clone_model`` does) with an :class:`InputQuantizer` first (none for an
    integer input)."""
    source = model.inputs[0]
    if not _is_float(source):
        return keras.models.clone_model(model, clone_function=clone_function)
    inputs = keras.Input(batch_shape=source.shape, dtype=source.dtype, name=source.name)
    layers = [clone_function(layer) for layer in model.layers]
    return keras.Sequential([inputs, InputQuantizer(name=f"{source.name}_int8")] + layers,
                            name=model.name, trainable=model.trainable)


def input_quantize_layers(model):
    """``[(input index, InputQuantizer layer)]`` of the model, in model input order."""
    index_of = {id(tensor): index for index, tensor in enumerate(model.inputs)}
    found = []
    for layer in model.layers:
        if isinstance(layer, InputQuantizer):
            found.append((index_of.get(id(layer.input), 0), layer))
    return sorted(found, key=lambda pair: pair[0])


def input_ranges(model):
    """``{layer name: (lo, hi)}`` of the model's input quantizers (None while unset)."""
    ranges = {}
    for _, layer in input_quantize_layers(model):
        lo, hi = float(ops.convert_to_numpy(layer.min_var)), float(ops.convert_to_numpy(layer.max_var))
        ranges[layer.name] = (lo, hi) if hi > lo else None
    return ranges


def set_input_ranges(model, batches):
    """Fix every input quantizer's range from ``batches`` (arrays, or per-input lists)."""
    for index, layer in input_quantize_layers(model):
        if len(model.inputs) > 1:
            values = [np.asarray(batch[index]) for batch in batches]
        else:
            values = [np.asarray(batch) for batch in batches]
        layer.set_range(*calibrated_input_range(values))

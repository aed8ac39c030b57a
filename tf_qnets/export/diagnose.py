"""Layer-by-layer diagnosis of an exported file: which activation codes differ from Keras.

For every low-bit activation quantizer (a lowered staircase) the Keras hard model's
integer code is ``y / alpha`` (``y`` the quantizer output, a level times ``alpha``); the
TFLite code is the staircase's output tensor, dequantized and divided by the same
``alpha``. Both run on the same inputs; a code *flips* when the two differ. Flips
compound (a flipped code changes the next layer's input), so the first layer with
flips is where to look.

TFLite tensors are found by name: the export graph builds each staircase inside the
name scope :func:`tf_qnets.export.emit.staircase_scope`, and the staircase output is
the output of the last operator (in execution order) producing a tensor of that scope.
Intermediate tensors are read with ``experimental_preserve_all_tensors``; this works
for the reference kernels (``kernels="reference"``) only, since delegated (XNNPACK)
parts do not keep their intermediates.

Example::

    for row in staircase_flips(qat, "model.tflite", x_test[:64]):
        print(row)   # LayerFlips(layer='quant_re_lu', flipped=0.0012, codes=200704)
"""

import dataclasses
import warnings

import numpy as np

from tf_qnets.keras2.backend import keras
from tf_qnets.export.emit import staircase_scope
from tf_qnets.keras2.quantizer import QNetsQuantizer
from tf_qnets.runtime import load_interpreter
from tf_qnets.keras2.wrapper import QNetsWrapper

__all__ = ["LayerFlips", "staircase_flips"]


@dataclasses.dataclass
class LayerFlips:
    """Fraction of one layer's activation codes that differ between Keras and TFLite."""

    layer: str
    flipped: float
    codes: int
    max_code_diff: int


def _staircase_layers(model):
    layers = []
    for layer in model.layers:
        if not isinstance(layer, QNetsWrapper):
            continue
        for role, _, quantizer, variables in layer.quantizer_states():
            if role != "weights" and isinstance(quantizer, QNetsQuantizer):
                layers.append((layer, float(variables["alpha"].numpy())))
    return layers


def _pooled_staircase(layer):
    """``(the layer before, the pooling)`` for a max pooling that carries the staircase of the
    ReLU before it (``quantize_model`` quantizes after the pooling; the file computes the
    staircase at the ReLU and pools its codes: :func:`tf_qnets.core.network.
    staircases_before_max_pools`), else None."""
    inner = layer.layer
    if not type(inner).__name__.startswith("MaxPooling"):
        return None
    return layer.inbound_nodes[0].inbound_layers, inner


def _op_outputs(interpreter):
    """``[(tensor index, tensor name)]`` of every op output, in execution order (read once: the
    interpreter rebuilds its whole tensor list on each ``get_tensor_details`` call)."""
    names = {detail["index"]: detail["name"] for detail in interpreter.get_tensor_details()}
    return [(tensor, names.get(tensor, ""))
            for op in interpreter._get_ops_details()  # noqa: SLF001 - the only op-order API
            for tensor in op["outputs"] if tensor >= 0]


def _output_tensor(outputs, scope):
    """The last of ``outputs`` (:func:`_op_outputs`) whose name lies in the name scope
    ``scope``, or None."""
    index = None
    for tensor, name in outputs:
        if scope + "/" in name:
            index = tensor
    return index


def _dequantized(interpreter, index):
    detail = interpreter.get_tensor_details()[index]
    scale, zero_point = detail["quantization"]
    value = interpreter.get_tensor(index).astype(np.float64)
    return (value - zero_point) * scale if scale else value


def staircase_flips(qat_model, tflite_path, x, kernels="reference"):
    """One :class:`LayerFlips` per lowered staircase for the inputs ``x`` (a small batch)."""
    x = np.asarray(x, np.float32)
    layers = _staircase_layers(qat_model)
    if not layers:
        return []
    probe = keras.Model(qat_model.inputs, [layer.output for layer, _ in layers])
    keras_out = probe(x, training=False)
    keras_out = keras_out if isinstance(keras_out, (list, tuple)) else [keras_out]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = load_interpreter(tflite_path, kernels=kernels, preserve_all_tensors=True)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], x.shape)
    interpreter.allocate_tensors()
    scale, zero_point = detail["quantization"]
    if scale:
        info = np.iinfo(detail["dtype"])
        feed = np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(detail["dtype"])
    else:
        feed = x.astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], feed)
    interpreter.invoke()
    rows = []
    outputs = _op_outputs(interpreter)
    for (layer, alpha), reference in zip(layers, keras_out):
        pool = _pooled_staircase(layer)
        source = layer if pool is None else pool[0]
        index = _output_tensor(outputs, staircase_scope(source.name))
        if index is None:
            raise ValueError(
                f"No staircase output for layer {layer.name!r} in {tflite_path!r}; was the file "
                "exported from this model by tf_qnets.export_tflite?")
        keras_codes = np.round(np.asarray(reference, np.float64) / alpha).astype(np.int64)
        values = _dequantized(interpreter, index)
        if pool is not None:      # the file pools the staircase's codes: pool them here too
            shape = (-1,) + tuple(source.output.shape[1:])
            values = np.asarray(pool[1](values.reshape(shape).astype(np.float32)), np.float64)
        tflite_codes = np.round(values / alpha).astype(np.int64)
        tflite_codes = tflite_codes.reshape(keras_codes.shape)
        diff = np.abs(keras_codes - tflite_codes)
        rows.append(LayerFlips(layer.name, float(np.mean(diff > 0)), int(diff.size),
                               int(diff.max(initial=0))))
    return rows

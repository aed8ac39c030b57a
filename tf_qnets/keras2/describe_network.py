"""Describe a Keras 2 :func:`tf_qnets.quantize_model` result for export (:mod:`tf_qnets.core.network`).

Walks the model's call nodes in execution order and turns each layer (looking through the
tfmot :class:`tf_qnets.keras2.wrapper.QNetsWrapper`) into a
:class:`tf_qnets.core.network.LayerDescription`: class name, inference configuration,
weights as NumPy arrays and its trained quantizers (a staircase's ``alpha``, ``beta``,
thresholds and levels, or an 8-bit min/max range). Activation names follow Keras 3, the
description's vocabulary: tf_keras' ``hard_sigmoid`` (``clip(0.2 x + 0.5, 0, 1)``) becomes
``"hard_sigmoid_keras2"`` since Keras 3's ``hard_sigmoid`` is ``relu6(x + 3) / 6``.

Example::

    network = describe_network(qat_model)
    [node.layer.class_name for node in network.nodes]     # ['Conv2D', 'ReLU', ...]
"""

import numpy as np

from tf_qnets.core.layer_kinds import KERNEL_ATTRIBUTES
from tf_qnets.core.network import (
    Int8Range,
    LayerDescription,
    NetworkDescription,
    NodeDescription,
    Staircase,
    portable_config,
    staircases_before_max_pools,
)
from tf_qnets.keras2 import tfmot
from tf_qnets.keras2.backend import keras
from tf_qnets.keras2.batch_norm import FrozenStatisticsBatchNormalization
from tf_qnets.keras2.input_quantizer import input_quantize_layers
from tf_qnets.keras2.input_quantizer import input_ranges as input_ranges_of
from tf_qnets.keras2.int8 import Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.keras2.propagation import ordered_nodes
from tf_qnets.keras2.quantizer import QNetsQuantizer
from tf_qnets.keras2.wrapper import QNetsWrapper

__all__ = ["describe_network", "native_layers"]

# tf_keras activation names whose function differs from Keras 3's function of that name.
_RENAMED_ACTIVATIONS = {"hard_sigmoid": "hard_sigmoid_keras2"}

# TFOpLambda functions described as the ``keras.ops`` operation of the same arithmetic
# (``x + 3.0`` and ``* (1 / 6)`` in MobileNetV3's hard sigmoid), so that export's rewrites
# see one vocabulary for both Kerases.
_OPERATIONS = {"__operators__.add": "Add", "math.add": "Add", "math.subtract": "Subtract",
               "math.multiply": "Multiply", "math.truediv": "TrueDivide",
               "math.divide": "Divide", "math.maximum": "Maximum", "math.minimum": "Minimum"}


def _short_name(variable):
    return variable.name.split("/")[-1].split(":")[0]


def _activation_name(activation):
    if activation is None:
        return None
    try:
        name = keras.activations.serialize(activation)
    except (TypeError, ValueError):
        name = getattr(activation, "__name__", type(activation).__name__)
    if isinstance(name, dict):
        name = name.get("config", {}).get("name", name.get("class_name"))
    return _RENAMED_ACTIVATIONS.get(name, name)


def _class_name(layer):
    if isinstance(layer, FrozenStatisticsBatchNormalization):
        return "BatchNormalization"   # the same computation at inference
    return type(layer).__name__


def _check_int8(layer, quantizer, variables, role):
    known = isinstance(quantizer, (Int8WeightQuantizer, Int8OutputQuantizer)) or type(
        quantizer).__name__ in ("LastValueQuantizer", "MovingAverageQuantizer")
    bits = getattr(quantizer, "num_bits", 8)
    if not known or bits != 8 or not {"min_var", "max_var"} <= set(variables or {}):
        raise ValueError(
            f"Layer {layer.name!r}: its {role} quantizer {type(quantizer).__name__} "
            f"({bits} bits) cannot be exported; export_tflite lowers tf_qnets staircases and "
            "8-bit min/max quantizers (tf_qnets int8, tfmot LastValue/MovingAverage). Quantize "
            "the layer with tf_qnets (per_layer=...) or leave it float (exclude=...).")


def _staircase(quantizer, variables):
    return Staircase(float(variables["alpha"].numpy()), float(variables["beta"].numpy()),
                     np.asarray(variables["thresholds"].numpy(), np.float64), quantizer.levels)


def _weights(layer, inner):
    """The inner layer's weights by short name; a kernel layer's kernel as ``"kernel"``."""
    weights = {_short_name(w): np.asarray(w.numpy()) for w in inner.weights}
    attribute = KERNEL_ATTRIBUTES.get(type(inner).__name__)
    if attribute is not None:
        kernel_var = getattr(inner, attribute)
        if isinstance(layer, QNetsWrapper) and tfmot.weight_quantizer_variables(layer):
            # tfmot's call leaves the quantized tensor in the attribute; use the variable.
            kernel_var = tfmot.weight_quantizer_variables(layer)[0][0]
        weights.pop(attribute, None)
        weights = {"kernel": np.asarray(kernel_var.numpy()), **weights}
    return weights


def _quantizers(layer):
    """``(weight quantizer, output quantizer)`` descriptions of a wrapped layer."""
    weight = output = None
    if not isinstance(layer, QNetsWrapper):
        return None, None
    for role, _, quantizer, variables in layer.quantizer_states():
        if isinstance(quantizer, QNetsQuantizer):
            found = _staircase(quantizer, variables)
        else:
            _check_int8(layer, quantizer, variables, "weight" if role == "weights" else "output")
            lo, hi = variables["min_var"].numpy(), variables["max_var"].numpy()
            kernel = None
            if role == "weights":
                kernel_var = tfmot.weight_quantizer_variables(layer)[0][0]
                kernel = np.asarray(quantizer(kernel_var, training=False, weights=variables).numpy())
            found = Int8Range(np.asarray(lo), np.asarray(hi), kernel)
        if role == "weights":
            weight = found
        else:
            output = found
    return weight, output


def _is_keras_tensor(value):
    return hasattr(value, "shape") and keras.backend.is_keras_tensor(value)


def _scalar(value):
    """``value`` as a float when it is a Python number or a scalar constant tensor, else None."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    if hasattr(value, "numpy") and not _is_keras_tensor(value):
        array = np.asarray(value.numpy())
        return float(array) if array.shape == () and np.issubdtype(array.dtype, np.number) else None
    return None


def _describe_operation(node):
    """A TFOpLambda node doing plain arithmetic on its tensors and scalar constants as class
    ``"op.<Name>"`` with ``config["arguments"]`` (each ``["tensor", position in the node's
    inputs]`` or ``["constant", value]``), as Keras 3 describes a ``keras.ops`` call; None for
    any other node."""
    layer = node.layer
    if type(layer).__name__ != "TFOpLambda":
        return None
    name = _OPERATIONS.get(layer.get_config().get("function"))
    kwargs = {k: v for k, v in (getattr(node, "call_kwargs", None) or {}).items() if k != "name"}
    values = list(getattr(node, "call_args", ()) or ())
    # a cloned model (tfmot's quantize_apply) passes the operands as keywords: add(x, y=3.0)
    for keyword in ("x", "y")[len(values):]:
        if keyword in kwargs:
            values.append(kwargs.pop(keyword))
    if name is None or kwargs:
        return None
    positions = {tensor_id: index for index, tensor_id in enumerate(node.flat_input_ids)}
    arguments = []
    for value in values:
        if _is_keras_tensor(value) and str(id(value)) in positions:
            arguments.append(["tensor", positions[str(id(value))]])
        elif _scalar(value) is not None:
            arguments.append(["constant", _scalar(value)])
        else:
            return None
    if len(arguments) != 2 or not any(kind == "tensor" for kind, _ in arguments):
        return None
    return LayerDescription(name=layer.name, class_name=f"op.{name}",
                            config={"arguments": arguments}, weights={},
                            input_shape=layer.input_shape)


def _describe_layer(layer):
    inner = layer.layer if isinstance(layer, QNetsWrapper) else layer
    config = portable_config(inner.get_config())
    if "activation" in config:
        config["activation"] = _activation_name(getattr(inner, "activation", None))
    weight_q, output_q = _quantizers(layer)
    input_shape = layer.input_shape
    return LayerDescription(
        name=layer.name, class_name=_class_name(inner), config=config,
        weights=_weights(layer, inner), input_shape=input_shape,
        weight_quantizer=weight_q, output_quantizer=output_q,
        quantized=isinstance(layer, QNetsWrapper))


def describe_network(model):
    """The :class:`tf_qnets.core.network.NetworkDescription` of a Keras 2 QAT model.

    A model input's :class:`~tf_qnets.keras2.input_quantizer.InputQuantizer` is not a node:
    its output stands for the input, and its range is the input's ``input_ranges`` entry."""
    input_ids = [str(id(t)) for t in model.inputs]
    input_ranges = [None] * len(input_ids)
    ranges = input_ranges_of(model)
    skipped = set()
    for index, layer in input_quantize_layers(model):
        input_ids[index] = str(id(layer.output))
        input_ranges[index] = ranges.get(layer.name)
        skipped.add(id(layer))
    nodes = []
    for node in ordered_nodes(model):
        if id(node.layer) in skipped:
            continue
        call_args = getattr(node, "call_args", ()) or ()
        as_list = bool(call_args) and isinstance(call_args[0], (list, tuple))
        layer = _describe_operation(node) or _describe_layer(node.layer)
        nodes.append(NodeDescription(layer, list(node.flat_input_ids),
                                     list(node.flat_output_ids), inputs_as_list=as_list))
    # a ReLU quantized after its max pooling: the staircase goes back where the file computes it
    nodes = staircases_before_max_pools(nodes, [str(id(t)) for t in model.outputs])
    return NetworkDescription(
        input_ids, [tuple(t.shape) for t in model.inputs], nodes,
        [str(id(t)) for t in model.outputs], name=model.name, framework="Keras 2 (tf_keras)",
        input_names=list(getattr(model, "input_names", None) or []) or None,
        input_ranges=input_ranges)


class _NativeCall:
    """One node's own tf_keras layer, called with the node's full call structure (constants
    and keyword arguments included: ``x + 3.0`` is a TFOpLambda called with ``(x, 3.0)``)."""

    def __init__(self, node):
        self.node = node
        self.layer = node.layer.layer if isinstance(node.layer, QNetsWrapper) else node.layer

    def __call__(self, inputs, training=None):
        tensors = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        known = {tensor_id: [tensor] * 64
                 for tensor_id, tensor in zip(self.node.flat_input_ids, tensors)}
        args, kwargs = self.node.map_arguments(known)
        if "training" in getattr(self.layer, "_call_spec").arg_names:
            kwargs["training"] = False
        return self.layer(*args, **kwargs)


def native_layers(model):
    """Layer name -> a call of the tf_keras layer itself (unwrapped, with its node's arguments):
    what export calls for a layer whose class it cannot rebuild from the description (a
    user's own layer class, a TFOpLambda)."""
    return {node.layer.name: _NativeCall(node) for node in ordered_nodes(model)}

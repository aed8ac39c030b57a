"""Describe a Keras 3 :func:`tf_qnets.keras3.quantize_model` result for export (:mod:`tf_qnets.core.network`).

Works on every backend (TensorFlow, JAX): it reads variables as NumPy arrays and the layer
graph as Keras 3 records it, and imports neither TensorFlow nor the exporter. Each layer
(looking through :class:`tf_qnets.keras3.wrapper.QNetsWrapper`) becomes a
:class:`tf_qnets.core.network.LayerDescription` with its class name, inference
configuration, weights and trained quantizers; the exporter lowers the description exactly as
it lowers a Keras 2 model's.

Example::

    network = describe_network(qat_model)          # any backend
    network.nodes[0].layer.weight_quantizer         # Staircase(alpha=..., beta=..., ...)
"""

import keras
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
from tf_qnets.keras3.batch_norm import FrozenStatisticsBatchNormalization
from tf_qnets.keras3.describe import activation_name
from tf_qnets.keras3.input_quantizer import input_quantize_layers
from tf_qnets.keras3.input_quantizer import input_ranges as input_ranges_of
from tf_qnets.keras3.int8 import MIN_WEIGHT_RANGE, Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.keras3.propagation import graph_of, ordered_nodes
from tf_qnets.keras3.quantizer import QNetsQuantizer
from tf_qnets.keras3.wrapper import QNetsWrapper

__all__ = ["describe_network"]


def _numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable))


def _quantizer(layer, quantizer, role, kernel=None):
    if quantizer is None:
        return None
    if isinstance(quantizer, QNetsQuantizer):
        return Staircase(float(_numpy(quantizer.alpha)), float(_numpy(quantizer.beta)),
                         np.asarray(_numpy(quantizer.thresholds), np.float64), quantizer.levels)
    if isinstance(quantizer, Int8OutputQuantizer):
        return Int8Range(_numpy(quantizer.min_var), _numpy(quantizer.max_var))
    if isinstance(quantizer, Int8WeightQuantizer):
        magnitude = np.abs(kernel.astype(np.float64))
        axes = tuple(range(kernel.ndim - 1)) if quantizer.per_axis else None
        bound = np.maximum(np.max(magnitude, axis=axes), MIN_WEIGHT_RANGE).astype(np.float32)
        quantized = _numpy(quantizer(keras.ops.convert_to_tensor(kernel), training=False))
        return Int8Range(-bound, bound, quantized)
    raise ValueError(
        f"Layer {layer.name!r}: its {role} quantizer {type(quantizer).__name__} cannot be "
        "exported; export_tflite lowers tf_qnets staircases and tf_qnets' 8-bit quantizers.")


def _class_name(layer):
    if isinstance(layer, FrozenStatisticsBatchNormalization):
        return "BatchNormalization"   # the same computation at inference
    return type(layer).__name__


def _weights(inner):
    """The layer's weights by short name; a kernel layer's kernel as ``"kernel"``."""
    weights = {}
    for variable in inner.weights:
        name = variable.name
        while name in weights:   # unnamed extra weights: keep them all, in order
            name += "_"
        weights[name] = _numpy(variable)
    attribute = KERNEL_ATTRIBUTES.get(type(inner).__name__)
    if attribute is not None and "kernel" not in weights:   # Keras 3 names it kernel anyway
        weights = {"kernel": weights.pop(attribute), **weights}
    return weights


def _shape(tensors):
    shapes = [tuple(tensor.shape) for tensor in tensors]
    return shapes[0] if len(shapes) == 1 else shapes


def _describe_layer(layer, node):
    inner = layer.layer if isinstance(layer, QNetsWrapper) else layer
    config = portable_config(inner.get_config())
    if "activation" in config:
        config["activation"] = activation_name(inner)
    weights = _weights(inner)
    weight_q = output_q = None
    if isinstance(layer, QNetsWrapper):
        weight_q = _quantizer(layer, layer.weight_quantizer, "weight", weights.get("kernel"))
        output_q = _quantizer(layer, layer.output_quantizer, "output")
    return LayerDescription(
        name=layer.name, class_name=_class_name(inner), config=config, weights=weights,
        input_shape=_shape(node.input_tensors), weight_quantizer=weight_q,
        output_quantizer=output_q, quantized=isinstance(layer, QNetsWrapper))


def _describe_operation(operation, node):
    """A ``keras.ops`` call in the graph (``x + 3.0``, ``x * y``): class ``"op.<Name>"`` and its
    arguments in order, each ``["tensor", position in the node's inputs]`` or
    ``["constant", value]``."""
    positions = {id(tensor): index for index, tensor in enumerate(node.input_tensors)}
    arguments = []
    for value in node.arguments.args:
        if id(value) in positions:
            arguments.append(["tensor", positions[id(value)]])
        elif isinstance(value, (int, float, np.number)):
            arguments.append(["constant", float(value)])
        else:
            raise ValueError(
                f"Operation {operation.name!r} ({type(operation).__name__}) takes an argument "
                f"export cannot describe ({type(value).__name__}); use a Keras layer instead.")
    if node.arguments.kwargs:
        raise ValueError(
            f"Operation {operation.name!r} ({type(operation).__name__}) has keyword arguments "
            f"{sorted(node.arguments.kwargs)}, which export cannot describe; use a Keras layer.")
    return LayerDescription(
        name=operation.name, class_name=f"op.{type(operation).__name__}",
        config={"arguments": arguments}, weights={}, input_shape=_shape(node.input_tensors))


def describe_network(model, argument="qat_model"):
    """The :class:`tf_qnets.core.network.NetworkDescription` of a Keras 3 QAT model (a
    TypeError naming ``argument`` for anything else)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`{argument}` must be a Keras model, got {type(model).__name__}.")
    if not any(isinstance(layer, QNetsWrapper) for layer in model.layers):
        raise TypeError(
            f"`{argument}` was not produced by tf_qnets.quantize_model (it has no QNetsWrapper "
            "layers); quantize and fine-tune it first, then export.")
    graph = graph_of(model)
    # A model input's InputQuantizer is not a node: its output stands for the input, and its
    # range is the input's ``input_ranges`` entry.
    input_ids = [str(id(t)) for t in graph.inputs]
    input_ranges = [None] * len(input_ids)
    ranges = input_ranges_of(model)
    skipped = set()
    for index, layer in input_quantize_layers(model):
        input_ids[index] = str(id(layer.output))
        input_ranges[index] = ranges.get(layer.name)
        skipped.add(id(layer))
    nodes = []
    for node in ordered_nodes(model):
        if id(node.operation) in skipped:
            continue
        args = node.arguments.args
        as_list = bool(args) and isinstance(args[0], (list, tuple))
        operation = node.operation
        as_list = as_list or not isinstance(operation, keras.layers.Layer)   # ops take all
        layer = (_describe_layer(operation, node) if isinstance(operation, keras.layers.Layer)
                 else _describe_operation(operation, node))
        nodes.append(NodeDescription(
            layer, [str(id(t)) for t in node.input_tensors],
            [str(id(t)) for t in node.outputs], inputs_as_list=as_list))
    # a ReLU quantized after its max pooling: the staircase goes back where the file computes it
    nodes = staircases_before_max_pools(nodes, [str(id(t)) for t in graph.outputs])
    return NetworkDescription(
        input_ids, [tuple(t.shape) for t in graph.inputs], nodes,
        [str(id(t)) for t in graph.outputs], name=model.name,
        framework=f"Keras 3 ({keras.backend.backend()} backend)",
        input_names=[t.name for t in graph.inputs], input_ranges=input_ranges)

"""``summary`` for Keras 3 models: what a quantized model is, layer by layer: bits, size and cost.

The same table as the Keras 2 ``tf_qnets.summary`` (columns, bytes under the int8 / INT4 /
packed storage rules, MACs and their operand precisions, folded BatchNormalization, totals
and ``compression = float32 bytes / deployed bytes``), computed by the shared
:mod:`tf_qnets.core.summary_table` from this module's description of each layer: its
class name, parameter count (the wrapped layer's; not the quantizers' ``alpha``, ``beta``,
thresholds and temperature), kernel and output shapes, the level sets of its
:class:`tf_qnets.keras3.quantizer.QNetsQuantizer` s and the layers feeding it. The same
network quantized by either Keras path gives the same rows. MACs of a kernel layer::

    Conv1D / Conv2D:  out_h * out_w * out_c * kh * kw * in_c / groups
    DepthwiseConv2D:  out_h * out_w * out_c * kh * kw
    Dense:            out_elements * in_features

Example::

    >>> import keras, numpy as np
    >>> from tf_qnets.keras3 import quantize_model
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
    ...                           keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)])
    >>> x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    >>> qat = quantize_model(model, w_bits=3, a_bits=3, calibration_data=x, verbose=0)
    >>> table = summary(qat, print_fn=None)
    >>> [(row.weights, row.output, row.macs, row.mac_precision) for row in table.rows][2]
    ('W3 {-4,-2,-1,0,1,2,4}', 'A3 {0..7}', 256, 'W3/A3')

Reference: Yang et al., "Quantization Networks", CVPR 2019 (arXiv:1911.09464).
"""

import math

import keras

from tf_qnets.core.layer_kinds import KERNEL_ATTRIBUTES
from tf_qnets.core.summary_table import (
    INT8, LayerFacts, LayerRow, ModelSummary, SummaryTotals, build_summary, describe_levels)
from tf_qnets.keras3.input_quantizer import InputQuantizer
from tf_qnets.keras3.int8 import is_int8_quantizer
from tf_qnets.keras3.quantizer import QNetsQuantizer
from tf_qnets.keras3.wrapper import QNetsWrapper

__all__ = ["summary", "ModelSummary", "LayerRow", "SummaryTotals", "describe_levels"]


def _quantizers(layer):
    """(inner layer, weight quantizer or None, output quantizer or None)."""
    if isinstance(layer, QNetsWrapper):
        return layer.layer, layer.weight_quantizer, layer.output_quantizer
    if isinstance(layer, (QNetsQuantizer, InputQuantizer)):   # a quantizer as a layer of its own
        return layer, None, layer
    return layer, None, None


def _levels(quantizer):
    """The core's description of a quantizer: None, its LevelSet, or INT8 (8 bits)."""
    if quantizer is None:
        return None
    if is_int8_quantizer(quantizer) or isinstance(quantizer, InputQuantizer):
        return INT8
    return quantizer.levels


def _node(layer, members):
    """This model's call of ``layer``: the node whose producers all belong to the model.

    Layers may be called in several models; the model's own node is the one fed by its
    layers (``members``: ids of its layers and input layers).
    """
    for node in getattr(layer, "_inbound_nodes", None) or []:
        producers = [parent.operation for parent in node.parent_nodes]
        if producers and all(id(producer) in members for producer in producers):
            return node
    return None


def _kernel_shape(inner):
    """Shape of a kernel layer's kernel, or None for other layers.

    The kinds are those of :data:`tf_qnets.core.layer_kinds.KERNEL_ATTRIBUTES`; Keras 3 keeps
    every one's kernel in ``layer.kernel`` (DepthwiseConv2D too).
    """
    kind = type(inner).__name__
    if kind not in KERNEL_ATTRIBUTES or not inner.built:
        return None
    kernel = getattr(inner, KERNEL_ATTRIBUTES[kind], None)
    if kernel is None:
        kernel = inner.kernel
    return tuple(int(dim) for dim in kernel.shape)


def _output_shape(layer, node):
    """The output's shape per sample (no batch dimension); None when unknown or several."""
    if node is not None:
        outputs = node.output_tensors
    else:
        try:
            outputs = layer.output
        except (AttributeError, ValueError):
            return None
    if isinstance(outputs, (list, tuple)):
        if len(outputs) != 1:
            return None
        outputs = outputs[0]
    return tuple(outputs.shape[1:])


def _parameter_count(layer, inner):
    """Parameters of the (wrapped) layer, each variable once; quantizer variables excluded."""
    if isinstance(layer, (QNetsQuantizer, InputQuantizer)):
        return 0
    seen, total = set(), 0
    for weight in inner.weights:
        if id(weight) in seen:
            continue
        seen.add(id(weight))
        total += math.prod(int(dim) for dim in weight.shape)
    return total


def _facts(layer, members):
    """The :class:`tf_qnets.core.summary_table.LayerFacts` of one layer of the model."""
    inner, weight_quantizer, output_quantizer = _quantizers(layer)
    node = _node(layer, members)
    kernel_shape = _kernel_shape(inner)
    is_batch_norm = isinstance(inner, keras.layers.BatchNormalization)
    inbound = () if node is None else tuple(parent.operation.name for parent in node.parent_nodes)
    return LayerFacts(
        name=inner.name,
        kind=type(inner).__name__,
        params=_parameter_count(layer, inner),
        kernel_shape=kernel_shape,
        output_shape=_output_shape(layer, node) if kernel_shape is not None else None,
        weights=_levels(weight_quantizer),
        output=_levels(output_quantizer),
        inbound=inbound,
        key=layer.name,
        use_bias=bool(getattr(inner, "use_bias", False)),
        batch_norm_channels=int(inner.moving_mean.shape[0]) if is_batch_norm else None,
    )


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a Keras 3 model (keras.Model), got {type(model).__name__}. "
            "For tf_keras (Keras 2) models use tf_qnets.summary.")
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            "`model` is not built; start it with `keras.Input(shape)` (or call "
            "`model.build(input_shape)`) before `summary(model)`.")


def summary(model, print_fn=print):
    """Print and return the per-layer bits / size / MACs table of a Keras 3 model.

    Args:
      model: a model from :func:`tf_qnets.keras3.quantize_model`, or a float Keras 3 model
        (Sequential or Functional, built).
      print_fn: called once with the whole table as a string; ``None`` prints nothing.

    Returns:
      A :class:`tf_qnets.core.summary_table.ModelSummary` (``rows``, ``totals``,
      ``as_dict()``; ``str()`` is the table).

    Raises:
      TypeError: ``model`` is not a Keras 3 model, or ``print_fn`` is not callable.
      ValueError: ``model`` is not built.
    """
    _check_model(model)
    if print_fn is not None and not callable(print_fn):
        raise TypeError(f"`print_fn` must be a callable taking a string, or None; got {print_fn!r}.")
    members = {id(layer) for layer in model.layers}
    members.update(id(tensor._keras_history.operation) for tensor in model.inputs
                   if getattr(tensor, "_keras_history", None) is not None)
    table = build_summary(model.name, [_facts(layer, members) for layer in model.layers
                                       if not isinstance(layer, keras.layers.InputLayer)])
    if print_fn is not None:
        print_fn(str(table))
    return table

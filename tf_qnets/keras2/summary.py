"""``tf_qnets.summary``: what a quantized model is, layer by layer: bits, size and cost.

For every layer (except the input) the table gives

* **Weights**: the kernel's precision: ``W3 {-4,-2,-1,0,1,2,4}`` (a low-bit
  :class:`tf_qnets.QNetsQuantizer`: ``W`` + bits to store one code, then the levels),
  ``int8`` (an 8-bit FakeQuant, ``first_last="int8"``), ``float32`` (not quantized)
  or ``-`` (no kernel);
* **Output**: the precision of the layer's output quantizer (``A3 {0..7}``, ``int8``)
  or ``-`` (not quantized);
* **Params**: every parameter of the layer (kernel, bias, BatchNormalization statistics);
* **int8 B / INT4 B / packed B**: bytes of the layer in the integer export under three
  storage rules for kernels:

  ====== ============================================================================
  rule   bits per kernel element
  ====== ============================================================================
  int8   8 for every kernel (a TFLite int8 model)
  INT4   4 for low-bit kernels whose levels lie within [-7, 7] (TFLite stores 4-bit
         weight FakeQuant as packed INT4), 8 otherwise
  packed ``ceil(log2(#levels))`` for low-bit kernels (the information content of a
         code), 8 otherwise
  ====== ============================================================================

  Biases count 32 bits (int32 in an integer model). A BatchNormalization right
  after a kernel layer is folded into it: it costs the int32 bias it adds
  (``4 * C`` bytes when that layer has no bias, else 0); any other BatchNormalization
  is a per-channel scale and offset (``2 * C`` bytes). Other parameters count 8 bits.
  Quantization parameters (scales, zero points) are not counted.
* **MACs** (multiply-accumulates per sample) of the kernel layers, from their shapes::

      Conv1D / Conv2D:  out_elements * prod(kernel_size) * in_channels / groups
      DepthwiseConv2D:  out_elements * prod(kernel_size)
      Dense:            out_elements * in_features

  with ``out_elements`` the number of output values per sample (for a Conv2D:
  ``out_h * out_w * out_c``). Other layers count 0. ``?`` when a shape is unknown.
* **MAC precision**: the operands' precisions as Keras computes them:
  ``W3/A3`` (3-bit weight codes times 3-bit activation codes), ``int8`` (both 8-bit),
  ``float`` (both float), or a mix such as ``W3/A32``. The input precision is the
  output quantizer of the producing layer, looked through layers that only move or
  select values (Flatten, Reshape, MaxPooling, Dropout, ZeroPadding, ...); the model
  input is float.

The totals compare the deployed size under each rule with float32 (4 bytes per
parameter): ``compression = float32 bytes / deployed bytes``.

Example::

    qat = tf_qnets.quantize_model(model, w_bits=3, a_bits=3, calibration_data=x[:64])
    table = tf_qnets.summary(qat)            # prints the table
    table.totals.compression_int4            # e.g. 6.2
    [row.as_dict() for row in table.rows]    # one dict per layer

The arithmetic and the table are :mod:`tf_qnets.core.summary_table` (shared with
``tf_qnets.keras3.summary``); this module describes a tf_keras model's layers to it.

Reference: Yang et al., "Quantization Networks", CVPR 2019 (arXiv:1911.09464).
"""

import math

from tf_qnets.core.layer_kinds import KERNEL_ATTRIBUTES
from tf_qnets.core.summary_table import (
    INT8, LayerFacts, LayerRow, ModelSummary, SummaryTotals, build_summary, describe_levels)
from tf_qnets.keras2 import tfmot
from tf_qnets.keras2.backend import keras, require_keras2_model
from tf_qnets.keras2.input_quantizer import InputQuantizer
from tf_qnets.keras2.int8 import Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.keras2.quantizer import QNetsQuantizer
from tf_qnets.keras2.wrapper import QNetsWrapper

__all__ = ["summary", "ModelSummary", "LayerRow", "SummaryTotals", "describe_levels"]


def _description(quantizer):
    """The core's description of a quantizer: None, its LevelSet, INT8 or its class name."""
    if quantizer is None:
        return None
    if isinstance(quantizer, QNetsQuantizer):
        return quantizer.levels
    if isinstance(quantizer, (Int8WeightQuantizer, Int8OutputQuantizer, InputQuantizer)):
        return INT8
    return type(quantizer).__name__


def _quantizers(layer):
    """(inner layer, weight quantizer or None, output quantizer or None)."""
    if isinstance(layer, tfmot.QuantizeLayer):    # a model input's int8 rounding
        return layer, None, layer.quantizer
    if not isinstance(layer, QNetsWrapper):
        return layer, None, None
    weight_quantizer = output_quantizer = None
    for role, _, quantizer, _ in layer.quantizer_states():
        if role == "weights":
            weight_quantizer = quantizer
        else:
            output_quantizer = quantizer
    return layer.layer, weight_quantizer, output_quantizer


def _inbound_layers(layer, members):
    """The layers feeding ``layer`` inside the model whose layers' ids are ``members``.

    Layers may be shared by several models (cloning keeps weightless layers), so the
    node of this model is the one whose inbound layers all belong to it.
    """
    for node in getattr(layer, "inbound_nodes", None) or []:
        inbound = node.inbound_layers
        inbound = list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]
        if inbound and all(id(producer) in members for producer in inbound):
            return inbound
    return []


def _kernel_shape(inner):
    """Shape of a kernel layer's kernel (None for other layers or an unbuilt layer)."""
    attribute = KERNEL_ATTRIBUTES.get(type(inner).__name__)
    kernel = getattr(inner, attribute, None) if attribute and inner.built else None
    return None if kernel is None else tuple(int(dim) for dim in kernel.shape)


def _output_shape(layer):
    """The output's shape per sample, or None for a layer with several outputs."""
    output_shape = layer.output_shape
    if isinstance(output_shape, list):
        return None
    return tuple(output_shape[1:])


def _parameter_count(layer):
    """Parameters of a layer; for a wrapper, those of the wrapped layer (not the quantizers')."""
    if not layer.built or isinstance(layer, tfmot.QuantizeLayer):
        return 0
    excluded = set()
    if isinstance(layer, QNetsWrapper):
        # tfmot's wrapper keeps a step counter of its own; it is not a parameter.
        step = getattr(layer, "optimizer_step", None)
        if step is not None:
            excluded.add(id(step))
        for _, _, _, variables in layer.quantizer_states():
            excluded.update(id(variable) for variable in variables.values())
    seen, total = set(), 0
    for weight in layer.weights:
        if id(weight) in excluded or id(weight) in seen:
            continue
        seen.add(id(weight))
        total += math.prod(int(dim) for dim in weight.shape)
    return total


def _facts(layer, members):
    """The :class:`tf_qnets.core.summary_table.LayerFacts` of one layer of the model."""
    inner, weight_quantizer, output_quantizer = _quantizers(layer)
    kernel_shape = _kernel_shape(inner)
    is_batch_norm = isinstance(inner, keras.layers.BatchNormalization)
    return LayerFacts(
        name=inner.name,
        kind=type(inner).__name__,
        params=_parameter_count(layer),
        kernel_shape=kernel_shape,
        output_shape=_output_shape(layer) if kernel_shape is not None else None,
        weights=_description(weight_quantizer),
        output=_description(output_quantizer),
        inbound=tuple(producer.name for producer in _inbound_layers(layer, members)),
        key=layer.name,
        use_bias=bool(getattr(inner, "use_bias", False)),
        batch_norm_channels=int(inner.moving_mean.shape[0]) if is_batch_norm else None,
    )


def summary(model, print_fn=print):
    """Print and return the per-layer bits / size / MACs table of ``model``.

    Args:
      model: a model from :func:`tf_qnets.quantize_model`, or a float tf_keras model
        (Sequential or Functional, built).
      print_fn: called once with the whole table as a string; ``None`` prints nothing.

    Returns:
      A :class:`ModelSummary` (``rows``, ``totals``, ``as_dict()``; ``str()`` is the table).
    """
    require_keras2_model(model)
    if not model.built:
        raise ValueError(
            "`model` is not built; give the first layer an `input_shape` or call "
            "`model.build(input_shape)` before `tf_qnets.summary(model)`.")
    if print_fn is not None and not callable(print_fn):
        raise TypeError(f"`print_fn` must be a callable taking a string, or None; got {print_fn!r}.")
    members = {id(layer) for layer in model.layers}
    table = build_summary(model.name, [_facts(layer, members) for layer in model.layers
                                       if not isinstance(layer, keras.layers.InputLayer)])
    if print_fn is not None:
        print_fn(str(table))
    return table

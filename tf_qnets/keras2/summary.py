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

Reference: Yang et al., "Quantization Networks", CVPR 2019 (arXiv:1911.09464).
"""

import dataclasses
import math

from tf_qnets.keras2.backend import keras, require_keras2_model
from tf_qnets.core.layer_kinds import KERNEL_ATTRIBUTES, VALUE_PRESERVING
from tf_qnets.keras2.int8 import Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.keras2.quantizer import QNetsQuantizer
from tf_qnets.keras2.wrapper import QNetsWrapper

__all__ = ["summary", "ModelSummary", "LayerRow", "SummaryTotals", "describe_levels"]

FLOAT_BITS = 32
INT8_BITS = 8
BIAS_BITS = 32
INT4_RANGE = (-7, 7)



@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One line of the table (see the module docstring for the meaning of each field).

    ``weight_bits`` / ``input_bits`` are 32 for float operands and ``None`` when there
    is no kernel; ``macs`` is ``None`` when a shape is unknown.
    """

    name: str
    layer_type: str
    weights: str
    output: str
    params: int
    kernel_params: int
    weight_bits: object
    input_bits: object
    bytes_float32: int
    bytes_int8: int
    bytes_int4: int
    bytes_packed: int
    macs: object
    mac_precision: str

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SummaryTotals:
    """Sums over all rows; ``compression_*`` is ``bytes_float32 / bytes_*``."""

    params: int
    kernel_params: int
    bytes_float32: int
    bytes_int8: int
    bytes_int4: int
    bytes_packed: int
    macs: int
    macs_by_precision: dict
    layers_with_unknown_macs: int
    compression_int8: float
    compression_int4: float
    compression_packed: float

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """The table as data: ``rows`` (one :class:`LayerRow` per layer) and ``totals``."""

    model_name: str
    rows: list
    totals: SummaryTotals

    def as_dict(self):
        return {"model_name": self.model_name,
                "rows": [row.as_dict() for row in self.rows],
                "totals": self.totals.as_dict()}

    def __str__(self):
        return _format(self)


def describe_levels(levels):
    """Compact text of a level set: ``{0..7}`` for runs of consecutive integers
    (more than three levels), the full list otherwise, e.g. ``{-4,-2,-1,0,1,2,4}``."""
    values = levels.levels
    if len(values) > 3 and all(step == 1 for step in levels.steps):
        return f"{{{values[0]}..{values[-1]}}}"
    return "{" + ",".join(str(v) for v in values) + "}"


def _storage_bits(quantizer):
    """(int8 rule, INT4 rule, packed rule) bits per kernel element."""
    if isinstance(quantizer, QNetsQuantizer):
        levels = quantizer.levels
        fits_int4 = INT4_RANGE[0] <= levels.levels[0] and levels.levels[-1] <= INT4_RANGE[1]
        return INT8_BITS, (4 if fits_int4 else INT8_BITS), min(levels.bits, INT8_BITS)
    return INT8_BITS, INT8_BITS, INT8_BITS


def _precision_bits(quantizer):
    if isinstance(quantizer, QNetsQuantizer):
        return quantizer.levels.bits
    if isinstance(quantizer, (Int8WeightQuantizer, Int8OutputQuantizer)):
        return INT8_BITS
    return FLOAT_BITS


def _describe_quantizer(quantizer, prefix):
    if quantizer is None:
        return "-"
    if isinstance(quantizer, QNetsQuantizer):
        return f"{prefix}{quantizer.levels.bits} {describe_levels(quantizer.levels)}"
    if isinstance(quantizer, (Int8WeightQuantizer, Int8OutputQuantizer)):
        return "int8"
    return type(quantizer).__name__


def _quantizers(layer):
    """(inner layer, weight quantizer or None, output quantizer or None)."""
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


def _output_bits(layer, members):
    """Precision (bits) of the values a layer outputs, as Keras computes them."""
    inner, _, output_quantizer = _quantizers(layer)
    if output_quantizer is not None:
        return _precision_bits(output_quantizer)
    if type(inner).__name__ in VALUE_PRESERVING:
        inbound = _inbound_layers(layer, members)
        if len(inbound) == 1:
            return _output_bits(inbound[0], members)
    return FLOAT_BITS


def _mac_precision(weight_bits, input_bits):
    if weight_bits == FLOAT_BITS and input_bits == FLOAT_BITS:
        return "float"
    if weight_bits == INT8_BITS and input_bits == INT8_BITS:
        return "int8"
    return f"W{weight_bits}/A{input_bits}"


def _kernel_shape(inner):
    """Shape of a kernel layer's kernel (None for other layers or an unbuilt layer)."""
    attribute = KERNEL_ATTRIBUTES.get(type(inner).__name__)
    kernel = getattr(inner, attribute, None) if attribute and inner.built else None
    return None if kernel is None else tuple(int(dim) for dim in kernel.shape)


def _macs(layer, inner, kernel_shape):
    """Multiply-accumulates per sample of a kernel layer; None when a shape is unknown."""
    output_shape = layer.output_shape
    if isinstance(output_shape, list):
        return None
    if any(dim is None for dim in output_shape[1:]):
        return None
    out_elements = math.prod(output_shape[1:])
    if type(inner).__name__ == "DepthwiseConv2D":
        per_output = math.prod(kernel_shape[:-2])
    else:
        per_output = math.prod(kernel_shape[:-1])
    return int(out_elements * per_output)


def _bytes(count, bits):
    return (count * bits + 7) // 8


def _folded_into(layer, members):
    """The kernel layer a BatchNormalization folds into at export, or None."""
    inbound = _inbound_layers(layer, members)
    if len(inbound) != 1:
        return None
    producer = inbound[0]
    inner = producer.layer if isinstance(producer, QNetsWrapper) else producer
    return inner if type(inner).__name__ in KERNEL_ATTRIBUTES else None


def _parameter_count(layer):
    """Parameters of a layer; for a wrapper, those of the wrapped layer (not the quantizers')."""
    if not layer.built:
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


def _row(layer, members):
    inner, weight_quantizer, output_quantizer = _quantizers(layer)
    layer_type = type(inner).__name__
    params = _parameter_count(layer)
    kernel_shape = _kernel_shape(inner)
    kernel_params = math.prod(kernel_shape) if kernel_shape is not None else 0
    other = params - kernel_params

    weight_bits = input_bits = macs = None
    mac_precision = ""
    if kernel_shape is not None:
        weights = "float32" if weight_quantizer is None else _describe_quantizer(weight_quantizer, "W")
        weight_bits = _precision_bits(weight_quantizer)
        inbound = _inbound_layers(layer, members)
        input_bits = _output_bits(inbound[0], members) if len(inbound) == 1 else FLOAT_BITS
        macs = _macs(layer, inner, kernel_shape)
        mac_precision = _mac_precision(weight_bits, input_bits)
        rule_bits = _storage_bits(weight_quantizer)
        deployed = [_bytes(kernel_params, bits) + _bytes(other, BIAS_BITS) for bits in rule_bits]
    elif isinstance(inner, keras.layers.BatchNormalization):
        weights = "-"
        channels = int(inner.moving_mean.shape[0])
        target = _folded_into(layer, members)
        if target is not None:
            size = 0 if getattr(target, "use_bias", False) else _bytes(channels, BIAS_BITS)
        else:
            size = _bytes(2 * channels, INT8_BITS)
        deployed = [size, size, size]
    else:
        weights = "-"
        deployed = [_bytes(params, INT8_BITS)] * 3

    return LayerRow(
        name=inner.name,
        layer_type=layer_type,
        weights=weights,
        output=_describe_quantizer(output_quantizer, "A"),
        params=params,
        kernel_params=kernel_params,
        weight_bits=weight_bits,
        input_bits=input_bits,
        bytes_float32=_bytes(params, FLOAT_BITS),
        bytes_int8=deployed[0],
        bytes_int4=deployed[1],
        bytes_packed=deployed[2],
        macs=macs if kernel_shape is not None else 0,
        mac_precision=mac_precision,
    )


def _ratio(reference, value):
    return float(reference) / value if value else float("inf")


def _totals(rows):
    by_precision = {}
    unknown = 0
    for row in rows:
        if row.macs is None:
            unknown += 1
        elif row.macs:
            by_precision[row.mac_precision] = by_precision.get(row.mac_precision, 0) + row.macs
    sizes = {key: sum(getattr(row, key) for row in rows)
             for key in ("bytes_float32", "bytes_int8", "bytes_int4", "bytes_packed")}
    return SummaryTotals(
        params=sum(row.params for row in rows),
        kernel_params=sum(row.kernel_params for row in rows),
        macs=sum(by_precision.values()),
        macs_by_precision=dict(sorted(by_precision.items(), key=lambda item: -item[1])),
        layers_with_unknown_macs=unknown,
        compression_int8=_ratio(sizes["bytes_float32"], sizes["bytes_int8"]),
        compression_int4=_ratio(sizes["bytes_float32"], sizes["bytes_int4"]),
        compression_packed=_ratio(sizes["bytes_float32"], sizes["bytes_packed"]),
        **sizes,
    )


_COLUMNS = (
    ("Layer (type)", "<"), ("Weights", "<"), ("Output", "<"), ("Params", ">"),
    ("int8 B", ">"), ("INT4 B", ">"), ("packed B", ">"), ("MACs", ">"), ("MAC precision", "<"),
)


def _count(value):
    return "?" if value is None else f"{value:,}"


def _format(table):
    cells = [[f"{row.name} ({row.layer_type})", row.weights, row.output, _count(row.params),
              _count(row.bytes_int8), _count(row.bytes_int4), _count(row.bytes_packed),
              _count(row.macs) if row.mac_precision else "0", row.mac_precision]
             for row in table.rows]
    widths = [max([len(title)] + [len(line[i]) for line in cells])
              for i, (title, _) in enumerate(_COLUMNS)]

    def line(values):
        return "  ".join(f"{value:{align}{width}}" for value, (_, align), width
                         in zip(values, _COLUMNS, widths)).rstrip()

    totals = table.totals
    out = [f'Model: "{table.model_name}"', line([title for title, _ in _COLUMNS]),
           line(["-" * width for width in widths])]
    out += [line(values) for values in cells]
    out.append(line(["-" * width for width in widths]))
    out.append(f"Parameters: {totals.params:,} ({totals.kernel_params:,} in kernels)")
    if totals.macs:
        parts = [f"{name} {count:,} ({100.0 * count / totals.macs:.1f}%)"
                 for name, count in totals.macs_by_precision.items()]
        out.append(f"MACs per sample: {totals.macs:,} = " + " + ".join(parts))
    else:
        out.append("MACs per sample: 0")
    if totals.layers_with_unknown_macs:
        out.append(f"  (not counted: {totals.layers_with_unknown_macs} layer(s) with unknown shapes)")
    size_rows = [("float32", totals.bytes_float32, 1.0),
                 ("int8 storage", totals.bytes_int8, totals.compression_int8),
                 ("INT4 storage", totals.bytes_int4, totals.compression_int4),
                 ("packed", totals.bytes_packed, totals.compression_packed)]
    size_width = max(len(f"{size:,}") for _, size, _ in size_rows)
    out.append("Size:")
    for name, size, ratio in size_rows:
        out.append(f"  {name:<12}  {size:>{size_width},} B  {ratio:5.2f}x smaller than float32"
                   if name != "float32" else f"  {name:<12}  {size:>{size_width},} B")
    return "\n".join(out)


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
    rows = [_row(layer, members) for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)]
    table = ModelSummary(model_name=model.name, rows=rows, totals=_totals(rows))
    if print_fn is not None:
        print_fn(str(table))
    return table

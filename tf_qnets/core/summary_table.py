"""The model summary without a framework: per-layer bits, bytes and MACs from plain numbers.

A framework path (``tf_qnets.keras2.summary``, ``tf_qnets.keras3.summary``) describes each
layer of its model as a :class:`LayerFacts` (class name, parameter count, kernel and output
shapes, the level sets of its quantizers, the layers feeding it); :func:`build_summary`
turns the list into a :class:`ModelSummary`, whose ``str()`` is the printed table. The same
network therefore gives the same table whichever Keras built it.

For every layer the table gives

* **Weights**: the kernel's precision: ``W3 {-4,-2,-1,0,1,2,4}`` (a low-bit quantizer:
  ``W`` + bits to store one code, then the levels), ``int8`` (an 8-bit FakeQuant),
  ``float32`` (not quantized) or ``-`` (no kernel);
* **Output**: the precision of the layer's output quantizer (``A3 {0..7}``, ``int8``)
  or ``-`` (not quantized);
* **Params**: every parameter of the layer (kernel, bias, BatchNormalization statistics);
* **int8 B / INT4 B / packed B**: bytes of the layer in the integer export, with kernels
  stored at 8 bits (int8), at 4 bits when the levels lie within [-7, 7] (INT4), or at
  ``ceil(log2(#levels))`` bits (packed); float kernels count 8 bits under every rule.
  Biases count 32 bits. A BatchNormalization right after a kernel layer folds into it
  (``4 * C`` bytes of int32 bias when that layer has no bias, else 0); any other is a
  per-channel scale and offset (``2 * C`` bytes). Other parameters count 8 bits::

      bytes(count, bits) = ceil(count * bits / 8)

* **MACs** per sample of the kernel layers (:func:`kernel_macs`); ``?`` when a shape is unknown;
* **MAC precision**: ``W<weight bits>/A<input bits>``, ``int8`` when both are 8 bits,
  ``float`` when both are float (32). The input precision is the output quantizer of the
  producing layer, looked through the layers of
  :data:`tf_qnets.core.layer_kinds.VALUE_PRESERVING`; the model input is float.

The totals compare the deployed size under each rule with float32 (4 bytes per
parameter): ``compression = float32 bytes / deployed bytes``.

Example::

    >>> from tf_qnets.core.levels import weight_levels
    >>> facts = [LayerFacts("fc", "Dense", params=36, kernel_shape=(8, 4), output_shape=(4,),
    ...                     weights=weight_levels(2), use_bias=True)]
    >>> table = build_summary("net", facts)
    >>> row = table.rows[0]
    >>> row.weights, row.macs, row.mac_precision, row.bytes_int8, row.bytes_packed
    ('W2 {-1,0,1}', 32, 'W2/A32', 48, 24)
    >>> table.totals.compression_packed        # 144 B float32 / (8 B of codes + 16 B of bias)
    6.0

Reference: Yang et al., "Quantization Networks", CVPR 2019 (arXiv:1911.09464).
"""

import dataclasses
import math

from tf_qnets.core.layer_kinds import KERNEL_ATTRIBUTES, VALUE_PRESERVING
from tf_qnets.core.levels import LevelSet

__all__ = [
    "BIAS_BITS", "FLOAT_BITS", "INT4_RANGE", "INT8", "INT8_BITS",
    "LayerFacts", "LayerRow", "ModelSummary", "SummaryTotals",
    "build_summary", "describe_levels", "describe_quantizer", "format_table", "kernel_macs",
    "layer_row", "mac_precision", "precision_bits", "storage_bits", "storage_bytes", "totals_of",
]

FLOAT_BITS = 32
INT8_BITS = 8
BIAS_BITS = 32
INT4_RANGE = (-7, 7)

#: The quantizer description of an 8-bit FakeQuant (``first_last="int8"``).
INT8 = "int8"


# --- quantizer descriptions ---------------------------------------------------------------
#
# A quantizer reaches this module as one of: ``None`` (not quantized: float), a
# :class:`LevelSet` (a low-bit tf_qnets quantizer), :data:`INT8`, or any other string (a
# quantizer this module does not know, named by its class; counted as float).

def describe_levels(levels):
    """Compact text of a level set: ``{0..7}`` for runs of consecutive integers
    (more than three levels), the full list otherwise, e.g. ``{-4,-2,-1,0,1,2,4}``."""
    values = levels.levels
    if len(values) > 3 and all(step == 1 for step in levels.steps):
        return f"{{{values[0]}..{values[-1]}}}"
    return "{" + ",".join(str(v) for v in values) + "}"


def precision_bits(quantizer):
    """Bits of the values a quantizer produces: the level set's bits, 8 for int8, else 32."""
    if isinstance(quantizer, LevelSet):
        return quantizer.bits
    if quantizer == INT8:
        return INT8_BITS
    return FLOAT_BITS


def describe_quantizer(quantizer, prefix):
    """``-`` (none), ``<prefix><bits> <levels>`` (low-bit), ``int8``, or the other quantizer's name."""
    if quantizer is None:
        return "-"
    if isinstance(quantizer, LevelSet):
        return f"{prefix}{quantizer.bits} {describe_levels(quantizer)}"
    return str(quantizer)


def storage_bits(quantizer):
    """(int8 rule, INT4 rule, packed rule) bits per kernel element of a kernel quantizer."""
    if isinstance(quantizer, LevelSet):
        fits_int4 = INT4_RANGE[0] <= quantizer.levels[0] and quantizer.levels[-1] <= INT4_RANGE[1]
        return INT8_BITS, (4 if fits_int4 else INT8_BITS), min(quantizer.bits, INT8_BITS)
    return INT8_BITS, INT8_BITS, INT8_BITS


def mac_precision(weight_bits, input_bits):
    """``float``, ``int8`` or ``W<weight_bits>/A<input_bits>``."""
    if weight_bits == FLOAT_BITS and input_bits == FLOAT_BITS:
        return "float"
    if weight_bits == INT8_BITS and input_bits == INT8_BITS:
        return "int8"
    return f"W{weight_bits}/A{input_bits}"


def storage_bytes(count, bits):
    """``ceil(count * bits / 8)``: bytes of ``count`` values of ``bits`` bits, packed."""
    return (count * bits + 7) // 8


def kernel_macs(kind, kernel_shape, output_shape):
    """Multiply-accumulates per sample of a kernel layer; None when a shape is unknown::

        Conv1D / Conv2D:  out_elements * prod(kernel_size) * in_channels / groups
        DepthwiseConv2D:  out_elements * prod(kernel_size)
        Dense:            out_elements * in_features

    ``kernel_shape``: the kernel's shape (``(*kernel_size, in_channels / groups, filters)``,
    ``(*kernel_size, channels, multiplier)`` or ``(in, out)``); ``output_shape``: the output's
    shape per sample (no batch dimension), None or with None entries when unknown.

    >>> kernel_macs("Conv2D", (3, 3, 2, 4), (8, 8, 4))     # 8*8*4 outputs, 3*3*2 each
    4608
    """
    if output_shape is None or any(dim is None for dim in output_shape):
        return None
    out_elements = math.prod(output_shape)
    if kind == "DepthwiseConv2D":
        per_output = math.prod(kernel_shape[:-2])
    else:
        per_output = math.prod(kernel_shape[:-1])
    return int(out_elements * per_output)


# --- the input: one LayerFacts per layer --------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LayerFacts:
    """What the table needs to know of one layer, in plain numbers.

    Attributes:
      name: the name shown (the wrapped layer's name for a quantized layer).
      kind: the Keras class name of the (wrapped) layer, read against
        :mod:`tf_qnets.core.layer_kinds`.
      params: the layer's parameters (kernel, bias, statistics; not the quantizers').
      kernel_shape: the kernel's shape for the kernel layers of
        :data:`~tf_qnets.core.layer_kinds.KERNEL_ATTRIBUTES`, else None.
      output_shape: the output's shape per sample; None when unknown.
      weights, output: the kernel's / the output's quantizer description (None, a
        :class:`LevelSet`, :data:`INT8` or another quantizer's name).
      inbound: keys of the layers feeding this one in this model (layers not described,
        such as the model input, produce float values).
      key: the layer's key in ``inbound`` lists (default ``name``).
      use_bias: a kernel layer has a bias (a BatchNormalization after it folds for free).
      batch_norm_channels: the channel count of a BatchNormalization, else None.
    """

    name: str
    kind: str
    params: int = 0
    kernel_shape: tuple = None
    output_shape: tuple = None
    weights: object = None
    output: object = None
    inbound: tuple = ()
    key: str = None
    use_bias: bool = False
    batch_norm_channels: int = None

    @property
    def ref(self):
        return self.name if self.key is None else self.key


# --- the output: rows, totals, table ------------------------------------------------------

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
        return format_table(self)


def _output_bits(key, by_key):
    """Precision (bits) of the values the layer ``key`` outputs."""
    facts = by_key.get(key)
    if facts is None:
        return FLOAT_BITS
    if facts.output is not None:
        return precision_bits(facts.output)
    if facts.kind in VALUE_PRESERVING and len(facts.inbound) == 1:
        return _output_bits(facts.inbound[0], by_key)
    return FLOAT_BITS


def _folds_into(facts, by_key):
    """The kernel layer (its LayerFacts) a BatchNormalization folds into at export, or None."""
    if len(facts.inbound) != 1:
        return None
    producer = by_key.get(facts.inbound[0])
    return producer if producer is not None and producer.kind in KERNEL_ATTRIBUTES else None


def layer_row(facts, by_key):
    """The :class:`LayerRow` of ``facts``; ``by_key`` maps keys to every layer's LayerFacts."""
    kernel_shape = facts.kernel_shape
    kernel_params = math.prod(kernel_shape) if kernel_shape is not None else 0
    other = facts.params - kernel_params

    weight_bits = input_bits = macs = None
    precision = ""
    if kernel_shape is not None:
        weights = "float32" if facts.weights is None else describe_quantizer(facts.weights, "W")
        weight_bits = precision_bits(facts.weights)
        input_bits = (_output_bits(facts.inbound[0], by_key) if len(facts.inbound) == 1
                      else FLOAT_BITS)
        macs = kernel_macs(facts.kind, kernel_shape, facts.output_shape)
        precision = mac_precision(weight_bits, input_bits)
        deployed = [storage_bytes(kernel_params, bits) + storage_bytes(other, BIAS_BITS)
                    for bits in storage_bits(facts.weights)]
    elif facts.batch_norm_channels is not None:
        weights = "-"
        channels = facts.batch_norm_channels
        target = _folds_into(facts, by_key)
        if target is not None:
            size = 0 if target.use_bias else storage_bytes(channels, BIAS_BITS)
        else:
            size = storage_bytes(2 * channels, INT8_BITS)
        deployed = [size, size, size]
    else:
        weights = "-"
        deployed = [storage_bytes(facts.params, INT8_BITS)] * 3

    return LayerRow(
        name=facts.name,
        layer_type=facts.kind,
        weights=weights,
        output=describe_quantizer(facts.output, "A"),
        params=facts.params,
        kernel_params=kernel_params,
        weight_bits=weight_bits,
        input_bits=input_bits,
        bytes_float32=storage_bytes(facts.params, FLOAT_BITS),
        bytes_int8=deployed[0],
        bytes_int4=deployed[1],
        bytes_packed=deployed[2],
        macs=macs if kernel_shape is not None else 0,
        mac_precision=precision,
    )


def _ratio(reference, value):
    return float(reference) / value if value else float("inf")


def totals_of(rows):
    """The :class:`SummaryTotals` of a list of :class:`LayerRow`."""
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


def build_summary(model_name, layers):
    """The :class:`ModelSummary` of a model whose layers (in order, the input excluded) are
    the :class:`LayerFacts` in ``layers``."""
    layers = list(layers)
    by_key = {facts.ref: facts for facts in layers}
    rows = [layer_row(facts, by_key) for facts in layers]
    return ModelSummary(model_name=model_name, rows=rows, totals=totals_of(rows))


_COLUMNS = (
    ("Layer (type)", "<"), ("Weights", "<"), ("Output", "<"), ("Params", ">"),
    ("int8 B", ">"), ("INT4 B", ">"), ("packed B", ">"), ("MACs", ">"), ("MAC precision", "<"),
)


def _count(value):
    return "?" if value is None else f"{value:,}"


def format_table(table):
    """The printed table of a :class:`ModelSummary` (what ``str(table)`` gives)."""
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

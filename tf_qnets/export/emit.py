"""Steps 2 and 3 of the export pipeline (plan -> calibrate -> emit): ranges, then the graph.

:func:`emit` walks the plan's nodes in order and lets the rewrite that claimed each node
(:mod:`tf_qnets.export.rewrites`) emit TensorFlow ops for it, in which every tensor carries a
fake-quantization range. :func:`calibrate` runs that walk eagerly on the representative
batches and records the min/max of every tensor whose range no quantizer fixes (the model
input, unfolded BN, Add, float outputs); :func:`trace` then traces it into the concrete
function the TFLite converter reads, either in int8 (``quantize=True``) or as the same network
in float (for the size comparison).

An :class:`EmitContext` holds what one walk needs and learns: the ranges, the traced values,
and the decisions taken on traced tensors (per-channel alignments, which staircases became
their kernel layer's own requantization, code multipliers of staircase outputs).

Example::

    plan = make_plan(describe(qat_model))
    ranges = calibrate(plan, batches)
    function, context = trace(plan, ranges)
    context.staircase_lowerings()      # {"aligned": [...], "copies": [...], ...}
"""

import numpy as np

from tf_qnets.core.input_range import calibrated_input_range
from tf_qnets.core.lowering import FINER_INPUT_FACTOR, finer_input_multiplier, wants_finer_input
from tf_qnets.keras2.backend import tf
from tf_qnets.export.activations import (
    fake_quant,
    has_saturating_lowering,
    lower_staircase,
    output_code_multiplier,
)

__all__ = ["EmitContext", "emit", "calibrate", "trace", "staircase_scope"]

_RANGE_MARGIN = 1e-6
# Ops between a fake-quantization and a kernel layer that keep the int8 scale.
SCALE_KEEPING_OPS = ("MaxPool", "Reshape", "Identity", "Squeeze", "ExpandDims", "Transpose")
# ... and keep every int8 value (zero padding pads with the zero point: the value 0).
LATTICE_KEEPING_OPS = SCALE_KEEPING_OPS + ("Pad", "PadV2")


def staircase_scope(layer_name):
    """Name scope of a lowered staircase; its TFLite tensor names contain ``scope + "/"``."""
    return f"{layer_name}_qnets_staircase"


class EmitContext:
    """One walk over an :class:`~tf_qnets.export.plan.ExportPlan` (see the module docstring).

    ``ranges`` None: calibrating (the min and max of each calibrated tensor go into
    ``batch_extremes``; nothing is quantized).
    ``quantize`` False: the same network in float, with no fake-quantization at all.
    """

    def __init__(self, plan, ranges=None, quantize=True):
        self.plan = plan
        self.ranges = ranges
        self.quantize = quantize
        self.batch_extremes = {}    # key -> (min, max) tensors of the batch being calibrated
        self.alignments = {}        # kernel layer name -> ChannelAlignment
        self.prescaled = {}         # staircase name -> kernel layer that computes it
        self.copied = {}            # staircase name -> kernel layer copied per threshold
        self.code_tables = set()    # staircases emitted as a table of their input's codes
        self.pinned_overrides = {}  # kernel layer name -> PinnedKernel re-stored while emitting
        self.code_multipliers = {}  # traced tensor name -> code multiplier of a staircase output
        self.saturating = {}        # traced tensor name -> (alpha, top level) of a 0..n staircase
        self.bias_lattices = {}     # kernel layer name -> (int32 bias unit per channel, real bias)
        self.model_input_names = set()

    @property
    def tracing(self):
        """True when emitting the int8 graph for conversion (ranges known, tensors symbolic)."""
        return self.quantize and self.ranges is not None

    # ------------------------------------------------------------------ ranges
    def calibrated(self, key, x):
        """Record min/max of ``x`` (calibration) or fake-quantize it with the recorded range."""
        if not self.quantize:
            return x
        if self.ranges is None:
            self.batch_extremes[key] = (tf.reduce_min(x), tf.reduce_max(x))
            return x
        lo, hi = self.ranges[key]
        if hi - lo < _RANGE_MARGIN:
            hi = lo + _RANGE_MARGIN
        return fake_quant(x, lo, hi)

    def output(self, layer, x, calibrate=True):
        """``x`` through ``layer``'s output quantizer: its lowered staircase, its int8 range, or
        (``calibrate``) a calibrated range."""
        if not self.quantize:
            return x
        kind, values = self.plan.outputs.get(layer.name, (None, None))
        if kind == "staircase":
            with tf.name_scope(staircase_scope(layer.name)):
                y = lower_staircase(x, *values, name=layer.name)
            return self.staircase_output(y, output_code_multiplier(values[2], values[3]),
                                         values[0], values[3])
        if kind == "int8":
            return fake_quant(x, *values)
        return self.calibrated(layer.name, x) if calibrate else x

    def staircase_output(self, y, multiplier, alpha=None, levels=None):
        """Remember that the traced tensor ``y`` stores level ``v`` as ``multiplier * v`` (for
        the alignment of the layers reading it), and, for a saturating staircase (levels
        ``0 .. n`` at scale ``alpha``, ``multiplier`` 1), its scale and top level
        (:meth:`finer_input`)."""
        if hasattr(y, "name"):
            self.code_multipliers[y.name] = multiplier
            if multiplier == 1 and levels is not None and has_saturating_lowering(levels):
                self.saturating[y.name] = (float(alpha), int(levels.levels[-1]))
        return y

    def finer_input(self, x, layer):
        """``x`` re-stored ``m`` times finer when it is a saturating staircase's output and the
        kernel ``layer`` reading it wants that (:func:`tf_qnets.core.lowering.wants_finer_input`
        with the plan's ``finer_inputs``).

        A saturating staircase keeps levels ``0 .. n`` on its own requantization grid (scale
        ``alpha``, one code per level). A kernel layer that reads it and is not itself aligned
        to a staircase rounds its int32 bias to the unit ``alpha * s_w``, which moves its
        int8 output off the Keras value by up to half a unit. Requantizing the input to scale
        ``alpha / m`` (``m = 255 // n``, level ``v`` stored as ``m v - 128``) changes no value
        (an integer factor: exact in every kernel set) and makes that unit ``m`` times finer.
        """
        if not self.tracing or not wants_finer_input(layer, self.plan.finer_inputs):
            return x
        entry = self.saturating.get(getattr(self.source(x), "name", None))
        if entry is None:
            return x
        alpha, top = entry
        m = finer_input_multiplier(top)
        if m < 2:
            return x
        # A FakeQuant right after another is dropped by the converter; a MUL by a factor
        # 2**-20 above 1 is kept and requantizes (level v -> code m v - 128 exactly).
        y = fake_quant(x * FINER_INPUT_FACTOR, 0.0, 255.0 * alpha * float(FINER_INPUT_FACTOR) / m)
        self.code_multipliers[y.name] = m
        return y

    # --------------------------------------------------------- traced tensors
    @staticmethod
    def source(x, keeping_ops=LATTICE_KEEPING_OPS):
        """The tensor ``x`` copies its int8 values from (through ``keeping_ops``)."""
        tensor = x
        while getattr(tensor, "op", None) is not None and tensor.op.type in keeping_ops:
            tensor = tensor.op.inputs[0]
        return tensor

    def int8_range(self, x, keeping_ops=LATTICE_KEEPING_OPS):
        """``(lo, hi)`` of the 8-bit fake-quantization ``x`` copies its values from (looking
        through ``keeping_ops``), or None (eager calibration, or no fake-quantization)."""
        op = getattr(self.source(x, keeping_ops), "op", None)
        if op is None or op.type != "FakeQuantWithMinMaxArgs" or op.get_attr("num_bits") != 8:
            return None
        return float(op.get_attr("min")), float(op.get_attr("max"))

    def input_scale(self, x, keeping_ops=LATTICE_KEEPING_OPS):
        """The int8 scale of ``x`` (its fake-quantization, looking through ``keeping_ops``),
        or None when unknown (eager calibration, or no fake-quantization)."""
        found = self.int8_range(x, keeping_ops)
        return None if found is None else (found[1] - found[0]) / 255.0

    def fixed_input_scale(self, x):
        """The int8 scale of ``x`` when the model fixes it (a lowered staircase's output, a
        finer input, the model input behind its own input quantizer), else None (a calibrated
        range, or not tracing)."""
        if not self.tracing:
            return None
        name = getattr(self.source(x), "name", None)
        fixed = name in self.code_multipliers or (
            name in self.model_input_names and self.plan.network.input_ranges[0] is not None)
        return self.input_scale(x) if fixed else None

    def record_bias_lattice(self, layer_name, x, pinned, weight_steps):
        """Remember the int32 bias unit ``s_in * s_w,c`` with which the converter will round
        the kernel layer's real bias (``pinned.bias``), when the input scale ``s_in`` is fixed
        by the model (:mod:`tf_qnets.export.bias_lattice`)."""
        scale = self.fixed_input_scale(x)
        if scale is not None:
            self.bias_lattices[layer_name] = (scale * np.asarray(weight_steps, np.float64),
                                              np.asarray(pinned.bias, np.float64))

    def input_code_multiplier(self, x):
        """``m`` when ``x`` is a lowered staircase's output (level ``y`` stored as ``m y``),
        possibly through ops that keep the int8 values; 1 for any other int8 tensor."""
        return self.code_multipliers.get(getattr(self.source(x), "name", None), 1)

    def reads_model_input(self, x):
        """True when ``x`` is the (fake-quantized) model input, possibly padded or pooled."""
        return getattr(self.source(x), "name", None) in self.model_input_names

    # ------------------------------------------------------------------ report
    def staircase_lowerings(self):
        """How each activation staircase was lowered, after tracing: ``{"aligned", "copies",
        "partial", "rounded": [staircase layer names]}``. ``aligned``: one requantization gives
        every Keras code in every output channel (XNNPACK's single rounding; see
        :meth:`reference_exact_fraction` for TFLite's reference kernels); ``partial``: computed
        by its kernel layer, aligned except for some channels, or all (INT4 weights leave no
        solution there, nor may a first layer's int8 weights on the model input); ``sum``: the
        requantization of the ADD before it (a residual sum, or ``x + 3`` in a hard sigmoid:
        one rounding, as Keras'); ``table``: a table of the 256 codes of its int8
        input, which the Keras model rounds the same way (a staircase on swish, sigmoid, ...:
        :mod:`tf_qnets.export.rewrites.code_staircase`); ``rounded``: it reads an int8 tensor
        that a calibrated range rounded, so its codes can differ from Keras'."""
        plans = self._aligned_plans()
        aligned = {name for name, plan in plans.items() if np.all(plan.solved)}
        # a kernel layer that computes the staircase but fits no alignment in some channels
        # (or in none: a first layer reading the model input) rounds those with its plain bias
        partial = {name for name, plan in plans.items() if name not in aligned}
        copies = set(self.copied)
        names = [name for name, (kind, _) in self.plan.outputs.items() if kind == "staircase"]
        sums = {n for n in names if self.plan.claimed_by(n, "add staircase")} - aligned - copies
        return {"aligned": [n for n in names if n in aligned],
                "copies": [n for n in names if n in copies],
                "partial": [n for n in names if n in partial],
                "sum": [n for n in names if n in sums],
                "table": [n for n in names if n in self.code_tables],
                "rounded": [n for n in names if n not in aligned and n not in copies
                            and n not in partial and n not in sums
                            and n not in self.code_tables]}

    def reference_exact_fraction(self):
        """Fraction of the aligned staircases' output channels whose alignment also holds under
        TFLite's reference kernels (two roundings); None when nothing was aligned."""
        plans = [plan for plan in self._aligned_plans().values() if np.all(plan.solved)]
        if not plans:
            return None
        return float(np.mean(np.concatenate([plan.exact for plan in plans])))

    def _aligned_plans(self):
        """Staircase name -> the ChannelAlignment of the kernel layer that computes it."""
        return {staircase: plan for staircase, plan in self.alignments.items()
                if staircase not in self.copied}


def emit(context, inputs):
    """The export computation for one input batch (eager or traced)."""
    plan = context.plan
    values = {}
    for tensor_id in plan.network.input_ids:
        x = context.calibrated("__input__", inputs)
        if hasattr(x, "name"):
            context.model_input_names.add(x.name)
        values[tensor_id] = x
    for node in plan.nodes:
        rewrite = plan.claims[node.layer.name]
        values[node.flat_output_ids[0]] = rewrite.emit(node, values, context)
    outputs = [values[tensor_id] for tensor_id in plan.network.output_ids]
    return outputs[0] if len(outputs) == 1 else outputs


def calibrate(plan, batches):
    """Run the float export graph on ``batches`` (traced once per batch shape); return the
    observed ranges ``{key: (min(lo, 0), max(hi, 0))}``.

    The model input's range is the one the model's own input quantizer holds (fixed by
    ``quantize_model``; :mod:`tf_qnets.keras2.input_quantizer`), or else taken from
    ``batches`` and widened where their values would sit on rounding ties of the file's input
    quantization (:mod:`tf_qnets.core.input_range`)."""
    context = EmitContext(plan, ranges=None)
    batches = [np.asarray(batch, np.float32) for batch in batches]

    def extremes(x):
        context.batch_extremes = {}
        emit(context, x)
        return context.batch_extremes

    # One graph instead of eager ops: TensorFlow runs it as a whole, and only the ranges
    # come back to Python.
    extremes = tf.function(extremes, autograph=False)
    ranges = {}
    for batch in batches:
        for key, (lo, hi) in extremes(tf.convert_to_tensor(batch)).items():
            lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
            old = ranges.get(key, (lo, hi))
            ranges[key] = (min(old[0], lo), max(old[1], hi))
    if "__input__" in ranges:
        fixed = plan.network.input_ranges[0]
        ranges["__input__"] = fixed if fixed is not None else calibrated_input_range(batches)
    return ranges


def trace(plan, ranges, quantize=True):
    """``(concrete function, EmitContext)``: the export graph traced for a float32 batch of the
    model's input shape, in int8 (``quantize``) or float."""
    context = EmitContext(plan, ranges=ranges, quantize=quantize)
    shape = [None] + list(plan.network.input_shapes[0][1:])
    function = tf.function(lambda x: emit(context, x), autograph=False,
                           input_signature=[tf.TensorSpec(shape, tf.float32)])
    return function.get_concrete_function(), context

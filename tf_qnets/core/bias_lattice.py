"""Folded biases on the integer file's int32 lattice, so that Keras adds the bias the file adds.

A kernel layer that the exporter emits as a plain kernel op (a linear projection before a
residual ``Add``, the last conv of a bottleneck) stores its real folded bias ``b_c``
(BN folded: ``b_c = beta_c + (bias_c - mean_c) g_c``) as the int32

    B_c = round(b_c / u_c),        u_c = s_in * s_w,c

with ``s_in`` the int8 scale of the layer's input and ``s_w,c`` its per-channel weight scale.
The file thus adds ``u_c B_c``, up to ``u_c / 2`` away from the ``b_c`` of the Keras hard
model; where a Keras value sits that close to an int8 rounding boundary the two part, and
the difference grows through the layers after it. Moving ``b_c`` onto the lattice,

    b_c  ->  u_c round(b_c / u_c),

through the variable that sets it (the folded BatchNormalization's ``beta``, else the
layer's own ``bias``) changes the Keras model by at most half a unit (with finer inputs and
codes ``u_c`` is a few thousandths of the layer's int8 output step or less) and makes the
file's int32 bias exact. ``quantize_model`` does it before it returns (a model exported
straight away is exact too), ``TemperatureScheduler`` at the end of ``fit``;
``tf_qnets.snap_biases(model)`` does it on demand; ``export_tflite`` lists the layers its
file found off their lattice.

:func:`bias_lattices` reads the units from a :class:`tf_qnets.core.network.NetworkDescription`
alone (no framework: both Keras paths, any backend), for the layers whose ``s_in`` the model
fixes, as ``export_tflite`` with its default options lowers them:

* the layer reads, through layers that keep int8 values (max pooling, zero padding,
  reshapes, dropout, an identity ``Normalization``), a saturating staircase (levels ``0 .. n``, uniform thresholds, scale
  ``alpha``): ``s_in = alpha * F / m`` with the finer input's ``m = 255 // n`` and
  ``F = 1 + 2**-20`` (:data:`tf_qnets.core.lowering.FINER_INPUT_FACTOR`), or ``alpha`` when
  ``m < 2``; or the model input behind its input quantizer ``[lo, hi]``:
  ``s_in = (hi - lo) / 255``; or a staircase on swish, sigmoid, ... lowered as a table of
  its int8 input's codes (:func:`tf_qnets.core.lowering.is_table_staircase`):
  ``s_in = alpha / m``, level ``v`` stored as ``m v``;
* ``s_w,c`` is the pinned kernel's weight scale (:mod:`tf_qnets.core.weight_codes`, low-bit
  codes stored as ``k * code``);
* the layer's output (after a folded BN) is not read only by a ReLU whose staircase the
  exporter computes inside the kernel layer (aligned to it, :mod:`tf_qnets.core.alignment`,
  exact for any bias, or copied per threshold); except for a first layer reading the model
  input, whose channels without an alignment keep the plainly rounded bias: its unit is
  that of the plain codes (a multiple of the finer-codes unit, so the bias is on both).

A layer whose output the file stores at a fixed int8 range behind a folded BatchNormalization
with a scale gets more than the snap: its BN scale per channel on an odd grid and the int32
bias that keep every value it can compute away from an int8 rounding boundary
(:mod:`tf_qnets.core.rounding_margin`), so that Keras' float32 rounds it as the file does;
with 8-bit weights (codes the converter chooses) its lattice is taken as 1 unit, which holds
for any codes (a first layer on 8-bit pixels: the rounding margin's fine grid).
A layer without a BN whose channels share one unit (a tf_qnets kernel: one weight scale; the
last convolution of a ResNetV2 block, its shortcut projection) gets the same margin from one
gain on its int8 output range instead of the BN scale.

A layer aligned to its staircase (exact for any bias) needs no snap, but its Keras
transitions must not sit within float32's error of a value its accumulator can take:
:func:`aligned_transitions` lists those layers and :func:`snap_biases` moves their biases by
the few millionths that keep every transition clear (:mod:`tf_qnets.core.transition_margin`).

The exporter records the units it really used while tracing, and ``tests/test_bias_lattice.py``
checks the two agree.

Example::

    lattices = bias_lattices(describe_network(qat))
    [(l.layer, float(abs(l.offset).max())) for l in lattices]   # units off the lattice
"""

import dataclasses

import numpy as np

from tf_qnets.core.layer_kinds import KERNEL_ATTRIBUTES, weight_named
from tf_qnets.core.lowering import (
    DEFAULT_FINER_INPUTS,
    FINER_INPUT_FACTOR,
    code_multiplier,
    finer_input_multiplier,
    has_saturating_lowering,
    wants_finer_input,
    is_table_staircase,
    is_uniform_staircase,
)
from tf_qnets.core.add_margin import (
    MAX_RELATIVE_CHANGE, add_roundings, beta_factor, range_values, step_factor, sum_grid)
from tf_qnets.core.alignment import channel_lattice
from tf_qnets.core.network import Int8Range, Staircase, channel_axis, is_linear, relu_cap
from tf_qnets.core.network_graph import INT8_KEEPING_LAYERS, graph_of, is_identity_normalization
from tf_qnets.core.normalization_lattice import snapped_mean
from tf_qnets.core.rounding_margin import (MAX_GAIN_CHANGE, margin_biases, margin_gains,
                                           scale_tolerances)
from tf_qnets.core.transition_margin import transition_shifts
from tf_qnets.core.weight_codes import (
    finer_code_factor, finer_codes, pin_layer_kernel, stored_codes, weight_steps)

__all__ = ["AlignedTransitions", "BiasLattice", "OFF_LATTICE_TOLERANCE", "SnapReport",
           "aligned_transitions", "bias_lattices", "bias_owner",
           "folded_batch_norms", "is_identity_normalization", "snap_biases"]

# A bias within this many units of its lattice point is on it (float32 products and the
# float32 Keras variables leave a few thousandths of a unit).
OFF_LATTICE_TOLERANCE = 0.02


# Layers whose int8 output range the model fixes (``quantize_model`` gives them an int8 output
# quantizer) and the export reproduces, read by a kernel layer that is not aligned to a
# staircase: the pixel scaling in front of MobileNetV3's first convolution
# (:mod:`tf_qnets.export.rewrites.affine`) and the normalization in front of EfficientNet's
# (:mod:`tf_qnets.export.rewrites.channel_affine`), the products before its projections
# (squeeze-and-excitation, hard-swish), residual sums and concatenations before a linear or
# hard-swish convolution.
INT8_SCALED_INPUTS = ("Rescaling", "Normalization", "Multiply", "Add", "Concatenate",
                      "BatchNormalization", "AveragePooling2D")


@dataclasses.dataclass
class BiasLattice:
    """One kernel layer's folded bias ``bias`` and the int32 unit ``unit`` the file rounds it
    with (one per output channel). ``owner`` / ``attribute``: the layer and variable that set
    the bias (the folded BatchNormalization's ``"beta"``, or the layer's ``"bias"``; None
    when it has neither: the bias is 0, on the lattice). For an output stored at a fixed
    int8 range, ``lattice``, ``output_step`` and ``scale_owner`` (behind a folded BN with a
    scale: the gain goes into ``gamma``) or ``range_owner`` (no BN, one unit for every
    channel: the gain goes into the output range) let :func:`snap_biases` keep its roundings
    decidable (:mod:`tf_qnets.core.rounding_margin`)."""

    layer: str
    unit: np.ndarray
    bias: np.ndarray
    owner: str = None
    attribute: str = None
    lattice: np.ndarray = None       # L_c: the accumulator's lattice, in units
    output_step: float = None        # the fixed int8 step of the output, if the model fixes it
    scale_owner: str = None          # the folded BatchNormalization with a ``gamma``
    range_owner: str = None          # no BN: the layer whose int8 output range gets the gain

    @property
    def offset(self):
        """``b_c / u_c - round(b_c / u_c)`` per channel, in units (between -1/2 and 1/2)."""
        ratio = np.asarray(self.bias, np.float64) / self.unit
        return ratio - np.round(ratio)

    @property
    def on_lattice(self):
        return bool(np.all(np.abs(self.offset) <= OFF_LATTICE_TOLERANCE))

    @property
    def snapped_bias(self):
        """``u_c round(b_c / u_c)``."""
        return self.unit * np.round(np.asarray(self.bias, np.float64) / self.unit)


@dataclasses.dataclass
class AlignedTransitions:
    """A kernel layer whose staircase the file computes in its own requantization (aligned,
    :mod:`tf_qnets.core.alignment`), with the scale of its input fixed by the model: its
    accumulator unit ``unit`` and lattice ``lattice`` per channel, folded bias ``bias``, the
    staircase's transitions ``levels`` (``b_i / beta``, in the pre-activation's own units)
    and the variable that sets the bias (``owner`` / ``attribute``, as in :class:`BiasLattice`).
    :func:`snap_biases` keeps the transitions decidable in float32
    (:mod:`tf_qnets.core.transition_margin`)."""

    layer: str
    unit: np.ndarray
    bias: np.ndarray
    lattice: np.ndarray
    levels: np.ndarray
    owner: str = None
    attribute: str = None

    @property
    def units(self):
        """``u_c``, 1 for a channel whose weight step is 0 (its accumulator is always 0)."""
        return np.where(self.unit > 0, self.unit, 1.0)

    @property
    def transitions(self):
        """``[C, n]``: ``p_i = (b_i / beta - b_c) / u_c`` in accumulator units."""
        return (self.levels[None, :] - self.bias[:, None]) / self.units[:, None]


@dataclasses.dataclass
class SnapReport:
    """What :func:`snap_biases` did: the layers whose bias moved (of ``checked``), the largest
    move in units of those that only snapped, and ``margins``: the layers (also in ``moved``)
    that got scales and biases on an odd grid (:mod:`tf_qnets.core.rounding_margin`)."""

    moved: list
    checked: int
    largest_move: float
    margins: list = dataclasses.field(default_factory=list)
    transitions: list = dataclasses.field(default_factory=list)
    normalizations: list = dataclasses.field(default_factory=list)
    sums: list = dataclasses.field(default_factory=list)

    def __str__(self):
        plain = [name for name in self.moved if name not in self.margins]
        parts = []
        if plain or not (self.margins or self.transitions or self.normalizations or self.sums):
            parts.append(f"moved the folded biases of {len(plain)} of {self.checked} kernel layers "
                         f"onto the integer file's int32 lattice (at most {self.largest_move:.2f} "
                         "units)")
        if self.margins:
            parts.append(f"gave {len(self.margins)} kernel layers with a fixed int8 output the "
                         "scales and int32 biases that keep their roundings decidable in float32 "
                         "(BN scales or int8 output ranges changed by at most "
                         f"{100 * MAX_GAIN_CHANGE:.1f}%, tf_qnets.core.rounding_margin)")
        if self.transitions:
            parts.append(f"moved the folded biases of {len(self.transitions)} kernel layers whose "
                         "staircase the file computes by a few millionths of their values, so "
                         "that float32 decides every transition as the file does "
                         "(tf_qnets.core.transition_margin)")
        if self.sums:
            parts.append(f"scaled the input scale (beta) of the staircase or the int8 output "
                         f"range of {len(self.sums)} additions the file rounds in its ADD by at "
                         f"most {100 * MAX_RELATIVE_CHANGE:.1f}%, so that no sum of their int8 "
                         "inputs sits where float32 and the file round apart "
                         "(tf_qnets.core.add_margin)")
        if self.normalizations:
            parts.append(f"moved the means of {len(self.normalizations)} Normalization layers "
                         "by less than a 254th of an input step, onto the int32 lattice of the "
                         "file's bias (tf_qnets.core.normalization_lattice)")
        return "; ".join(parts)


def folded_batch_norms(network):
    """``{kernel layer name: the BatchNormalization description folded into it}``: a BN over
    the last axis whose only input is a linear kernel layer without an output quantizer,
    read by nothing else (as the exporter folds it)."""
    producer, consumers, _ = graph_of(network)
    folds = {}
    for node in network.nodes:
        if node.layer.class_name != "BatchNormalization" or len(node.flat_input_ids) != 1:
            continue
        source = producer.get(node.flat_input_ids[0])
        if source is None or source.layer.class_name not in KERNEL_ATTRIBUTES:
            continue
        if not is_linear(source.layer) or source.layer.output_quantizer is not None:
            continue
        if consumers.get(node.flat_input_ids[0], 0) != 1 or channel_axis(node.layer) != -1:
            continue
        folds[source.layer.name] = node.layer
    return folds


def _staircase_in_kernel(layer, readers, consumers):
    """The staircase the exporter computes inside the kernel layer ``layer`` (its own, with a
    linear or ReLU activation; or that of the only reader of its output, possibly through a
    folded BN: a ReLU, capped or not, whose cap changes no code), else None."""
    if isinstance(layer.output_quantizer, Staircase):
        return layer.output_quantizer if layer.activation in (None, "linear", "relu") else None
    if not is_linear(layer) or layer.output_quantizer is not None:
        return None
    if len(readers) != 1 or consumers != 1:
        return None
    reader = readers[0]
    quantizer = reader.layer.output_quantizer
    is_relu, cap = relu_cap(reader.layer)
    if not isinstance(quantizer, Staircase) or not is_relu or len(reader.flat_input_ids) != 1:
        return None
    if cap is not None:
        top = float(np.max(np.asarray(quantizer.thresholds, np.float64))) / quantizer.beta
        if top >= cap * (1 - 1e-6):     # the cap clips codes: the ReLU reads a rounded tensor
            return None
    return quantizer


def bias_owner(layer, bn):
    """``(layer name, variable name)`` that sets a kernel layer's folded bias: the folded
    BatchNormalization ``bn``'s ``beta``, else the layer's ``bias``; ``(None, None)`` when
    neither exists (the bias is 0)."""
    if bn is not None:
        return (bn.name, "beta") if "beta" in bn.weights else (None, None)
    if layer.config.get("use_bias", False):
        return layer.name, "bias"
    return None, None


def _input_scale(network, producer, tensor_id, finer_input):
    """``(scale, reads the model input, m)``: the int8 scale the model fixes for ``tensor_id``
    (None when a calibrated range sets it) and the code multiplier ``m`` of its values (a
    finer input, ``finer_input`` True, stores level ``v`` as ``m v``)."""
    while True:
        node = producer.get(tensor_id)
        if node is None:
            if tensor_id not in network.input_ids:
                return None, False, 1
            fixed = network.input_ranges[network.input_ids.index(tensor_id)]
            return (None if fixed is None else (float(fixed[1]) - float(fixed[0])) / 255.0), True, 1
        layer = node.layer
        if layer.output_quantizer is None and (layer.class_name in INT8_KEEPING_LAYERS
                                               or is_identity_normalization(layer)):
            tensor_id = node.flat_input_ids[0]
            continue
        quantizer = layer.output_quantizer
        if (isinstance(quantizer, Int8Range) and layer.class_name in INT8_SCALED_INPUTS
                and np.ndim(quantizer.lo) == 0):
            return (float(quantizer.hi) - float(quantizer.lo)) / 255.0, False, 1
        if not isinstance(quantizer, Staircase):
            return None, False, 1
        levels = quantizer.levels
        if len(node.flat_input_ids) == 1 and is_table_staircase(
                layer, getattr(producer.get(node.flat_input_ids[0]), "layer", None)):
            m = code_multiplier(levels)         # a table of its input's codes
            return float(quantizer.alpha) / m, False, m
        if not (has_saturating_lowering(levels)
                and is_uniform_staircase(quantizer.thresholds, levels)):
            return None, False, 1
        alpha = float(quantizer.alpha)
        m = finer_input_multiplier(levels.levels[-1]) if finer_input else 1
        if m < 2:
            return alpha, False, 1
        return alpha * float(FINER_INPUT_FACTOR) / m, False, m


def _fixed_scale_kernels(network, finer_inputs):
    """``(layer, bn, scale, reads_input, m, staircase)`` for every kernel layer whose input
    scale the model fixes (:func:`_input_scale`): its folded BN (or None) and the staircase the
    exporter computes inside it (:func:`_staircase_in_kernel`, or None)."""
    producer, consumers, readers = graph_of(network)
    folds = folded_batch_norms(network)
    for node in network.nodes:
        layer = node.layer
        if layer.class_name not in KERNEL_ATTRIBUTES:
            continue
        bn = folds.get(layer.name)
        output_id = node.flat_output_ids[0]
        if bn is not None:
            output_id = network.node_by_name[bn.name].flat_output_ids[0]
        scale, reads_input, multiplier = _input_scale(network, producer, node.flat_input_ids[0],
                                                      wants_finer_input(layer, finer_inputs))
        if scale is None:
            continue
        staircase = _staircase_in_kernel(layer, readers.get(output_id, []),
                                         consumers.get(output_id, 0))
        yield layer, bn, scale, reads_input, multiplier, staircase


def _is_aligned(staircase, reads_input):
    """Whether the exporter computes ``staircase`` in its kernel layer's requantization (or
    per-threshold copies): all but a first layer's uniform staircase, which keeps the plain
    bias lattice for its channels without an alignment."""
    return staircase is not None and not (
        reads_input and is_uniform_staircase(staircase.thresholds, staircase.levels))


def aligned_transitions(network):
    """The :class:`AlignedTransitions` of every kernel layer aligned to its staircase whose
    input scale the model fixes, as ``export_tflite`` lowers them (with or without finer
    inputs: those go to the layers that are not aligned)."""
    result = []
    # An aligned layer reads its input as stored (a staircase at scale alpha, one code per
    # level): only the plain kernels get finer inputs. Its codes may be stored k times finer,
    # which leaves the lattice of real accumulator values as it is.
    for layer, bn, scale, reads_input, multiplier, staircase in _fixed_scale_kernels(
            network, finer_inputs=False):
        if not _is_aligned(staircase, reads_input):
            continue
        pinned, _ = pin_layer_kernel(layer, bn)
        steps = np.asarray(weight_steps(pinned), np.float64)
        codes = stored_codes(pinned)
        levels = np.asarray(staircase.thresholds, np.float64) / float(staircase.beta)
        result.append(AlignedTransitions(
            layer.name, scale * steps, np.asarray(pinned.bias, np.float64),
            channel_lattice(codes, multiplier), levels, *bias_owner(layer, bn)))
    return result


def bias_lattices(network, finer_inputs=DEFAULT_FINER_INPUTS):
    """The :class:`BiasLattice` of every kernel layer whose int32 bias unit the model fixes
    (module docstring), for ``export_tflite(..., finer_inputs=finer_inputs)`` with INT8
    kernels (``int4_weights=False``, the default)."""
    result = []
    for layer, bn, scale, reads_input, multiplier, staircase in _fixed_scale_kernels(
            network, finer_inputs):
        if _is_aligned(staircase, reads_input):
            continue      # aligned to its staircase (exact for any bias) or copied per threshold
        in_kernel = staircase is not None
        pinned, _ = pin_layer_kernel(layer, bn)
        code_factor = 1
        if not in_kernel and pinned.levels is not None and pinned.num_bits == 8:
            pinned = finer_codes(pinned)
            code_factor = finer_code_factor(pinned)
        row = BiasLattice(layer.name, scale * np.asarray(weight_steps(pinned), np.float64),
                          np.asarray(pinned.bias, np.float64), *bias_owner(layer, bn))
        output_quantizer = (bn if bn is not None else layer).output_quantizer
        if (not in_kernel and isinstance(output_quantizer, Int8Range)
                and np.ndim(output_quantizer.lo) == 0):
            if bn is not None and "gamma" in bn.weights:
                row.scale_owner = bn.name
            elif (bn is None and pinned.codes is not None
                  and np.ptp(row.unit) <= 1e-9 * np.max(row.unit)):
                row.range_owner = layer.name
            if row.scale_owner is not None or row.range_owner is not None:
                # 8-bit weights (codes the converter chooses): lattice 1, which holds for any
                # codes (a value on (p / q) Z + r for L = 1 is on it for every L)
                row.lattice = (channel_lattice(pinned.codes, multiplier * code_factor)
                               if pinned.codes is not None
                               else np.full(np.shape(row.unit), float(multiplier)))
                row.output_step = (float(output_quantizer.hi) - float(output_quantizer.lo)) / 255.0
        result.append(row)
    return result


# Passes of :func:`snap_biases` at most: one, a second where the first moved an int8 range
# that another layer reads (an ``Add``'s output range is the input scale of the convolution
# after it, whose lattice and margins follow from it), a third to confirm.
MAX_SNAP_PASSES = 3


def snap_biases(model, describe, finer_inputs=DEFAULT_FINER_INPUTS, network=None):
    """Move each bias of ``model`` onto its lattice (module docstring; that of
    ``export_tflite(..., finer_inputs=finer_inputs)``) and return a :class:`SnapReport`.
    ``describe(model)`` gives the :class:`tf_qnets.core.network.NetworkDescription` of the
    model as it is now (``network``: that description, if the caller has it already);
    ``model.get_layer(owner)`` (looking inside a wrapper's ``.layer``)
    gives each variable, read with ``np.asarray`` and written with ``assign``, which both
    Kerases' variables support on every backend.

    The additions go first (an ``Add``'s int8 output range, which :mod:`tf_qnets.core.add_margin`
    may scale, is the input scale of the layers that read it); the network is described again
    after any pass that moved a scale or a range, and the pass repeated (at most
    :data:`MAX_SNAP_PASSES`), so that the margins are those of the model's final scales: an
    EfficientNet whose expansion margins were chosen for its block outputs' old ranges kept
    none, and its file parted from Keras on one int8 pre-activation in a thousand."""
    report = SnapReport([], 0, 0.0)
    for number in range(1, MAX_SNAP_PASSES + 1):
        if network is None or number > 1:
            network = describe(model)
        if not _snap_pass(model, network, finer_inputs, report, last=number == MAX_SNAP_PASSES):
            break
    return report


def _snap_pass(model, network, finer_inputs, report, last):
    """One pass of :func:`snap_biases` over ``network``, recorded in ``report``. True when it
    changed a scale or an int8 range (the sums' factors, the margins' gains), which the
    layers reading them see only in a new description; then, unless it is the ``last``
    pass, it stops after the sums, before any lattice is read from their old ranges."""
    rescaled = False

    def record(names, name):
        if name not in names:
            names.append(name)

    for rounding in add_roundings(network):
        if _keep_sums_decidable(model, rounding):
            record(report.sums, rounding.layer)
            rescaled = True
    if rescaled and not last:
        return True
    lattices = bias_lattices(network, finer_inputs)
    report.checked = len(lattices)
    for lattice in lattices:
        if lattice.range_owner is not None:
            if _keep_range_roundings_decidable(model, lattice):
                record(report.margins, lattice.layer)
                record(report.moved, lattice.layer)
                rescaled = True
            continue
        if lattice.owner is None:
            continue
        if lattice.scale_owner is not None:     # its owner is that BN's beta
            if _keep_roundings_decidable(model, lattice):
                record(report.margins, lattice.layer)
                record(report.moved, lattice.layer)
            continue
        if lattice.on_lattice:
            continue
        variable = _variable(model, lattice.owner, lattice.attribute)
        value = np.asarray(variable, np.float64)
        variable.assign((value + lattice.snapped_bias - lattice.bias).astype(np.float32))
        record(report.moved, lattice.layer)
        report.largest_move = max(report.largest_move, float(np.max(np.abs(lattice.offset))))
    for aligned in aligned_transitions(network):
        if aligned.owner is not None and _keep_transitions_decidable(model, aligned):
            record(report.transitions, aligned.layer)
    for name, scale in normalization_input_scales(network):
        if _snap_normalization(model, name, scale):
            record(report.normalizations, name)
    return rescaled


def normalization_input_scales(network):
    """``(layer name, s_in)`` for every Normalization that the file computes as a 1x1 depthwise
    convolution (not the identity, an int8 output, 4-D, channels last;
    :mod:`tf_qnets.export.rewrites.channel_affine`) on an input whose int8 scale ``s_in`` the
    model fixes (:mod:`tf_qnets.core.normalization_lattice`)."""
    producer, _, _ = graph_of(network)
    for node in network.nodes:
        layer = node.layer
        if (layer.class_name != "Normalization" or is_identity_normalization(layer)
                or layer.config.get("invert", False)
                or not isinstance(layer.output_quantizer, Int8Range)
                or len(node.flat_input_ids) != 1 or len(tuple(layer.input_shape)) != 4
                or channel_axis(layer) != -1):
            continue
        # the export reads the Normalization's input as stored (no finer input)
        scale, _, _ = _input_scale(network, producer, node.flat_input_ids[0], False)
        if scale is not None:
            yield layer.name, scale


def _snap_normalization(model, name, input_scale):
    """Move the mean of the Normalization ``name`` onto its lattice (when it keeps it in a
    variable; a mean given as a constant stays). True when it moved."""
    layer = model.get_layer(name)
    inner = getattr(layer, "layer", layer)
    mean = weight_named(inner, "mean")       # a constant's tensor has no assign: it stays
    variance = weight_named(inner, "variance")
    if mean is None or variance is None or not hasattr(mean, "assign"):
        return False
    value = np.asarray(mean, np.float64)
    snapped = snapped_mean(value, np.asarray(variance, np.float64), input_scale)
    snapped = snapped.reshape(value.shape).astype(np.float32)
    if np.array_equal(snapped, value.astype(np.float32)):
        return False
    mean.assign(snapped)
    inner.finalize_state()      # the layer's own mean (a tensor it derives from the variable)
    return True


def _keep_transitions_decidable(model, aligned):
    """Move the folded bias of an aligned kernel layer by ``-delta_c u_c`` per channel
    (:func:`tf_qnets.core.transition_margin.transition_shifts`). True when it moved."""
    variable = _variable(model, aligned.owner, aligned.attribute)
    value = np.asarray(variable, np.float64)
    magnitudes = (np.abs(aligned.bias) + np.abs(value)) / aligned.units
    shifts, _ = transition_shifts(aligned.transitions, aligned.lattice, magnitudes)
    shifts = np.where(aligned.unit > 0, shifts, 0.0)
    if not np.any(shifts != 0.0):
        return False
    variable.assign((value - shifts * aligned.units).astype(np.float32))
    return True


def _keep_sums_decidable(model, rounding):
    """Scale the ``beta`` of a staircase an ADD computes, or divide the int8 output range of an
    ``Add``, by the factor that leaves the fewest sums where float32 and the file round apart
    (:mod:`tf_qnets.core.add_margin`; the inputs read from the model as earlier snaps left
    them). True when a variable changed."""
    inputs = []
    for (name, kind), (_, codes) in zip(rounding.sources, rounding.inputs):
        if kind == "range":
            low, high = _output_range_variables(model, name)
            values = range_values(np.asarray(low), np.asarray(high))
            if values is None:
                return False
            inputs.append(values)
        else:
            inputs.append((float(np.asarray(_staircase_variable(model, name, "alpha"))), codes))
    if rounding.kind == "staircase":
        variable = _staircase_variable(model, rounding.layer, "beta")
        beta = float(np.asarray(variable))
        factor, _, _ = beta_factor(*sum_grid(inputs, beta), rounding.thresholds, beta)
        if factor == 1.0:
            return False
        variable.assign(np.float32(beta * factor))
        return True
    low, high = _output_range_variables(model, rounding.layer)
    lo, hi = float(np.asarray(low)), float(np.asarray(high))
    step = (hi - lo) / 255.0
    factor, _, _ = step_factor(*sum_grid(inputs, 1.0 / step), step)
    if factor == 1.0:
        return False
    low.assign(np.float32(lo / factor))
    high.assign(np.float32(hi / factor))
    return True


def _staircase_variable(model, name, variable_name):
    """A variable (``alpha``, ``beta``) of the output staircase of the wrapped layer ``name``
    (a Keras 3 wrapper's ``output_quantizer``, or a tf_keras wrapper's tfmot variables), or of
    the max pooling reading it: ``quantize_model`` quantizes a ReLU read only by a max pooling
    after the pooling, and the description puts that staircase back on the ReLU."""
    for layer in _layer_and_its_readers(model, name):
        quantizer = getattr(layer, "output_quantizer", None)
        if hasattr(quantizer, variable_name):
            return getattr(quantizer, variable_name)
        for role, _, _, variables in getattr(layer, "quantizer_states", list)():
            if role == "output" and variable_name in variables:
                return variables[variable_name]
    raise ValueError(f"Layer {name!r} has no output staircase.")


def _layer_and_its_readers(model, name):
    """``model.get_layer(name)``, then the layers of ``model`` whose one input it computes."""
    yield model.get_layer(name)
    for layer in model.layers:
        try:
            history = getattr(layer.input, "_keras_history", None)
        except (AttributeError, RuntimeError, TypeError, ValueError):   # no single input
            continue
        if history is not None and getattr(history[0], "name", None) == name:
            yield layer


def _variable(model, owner, attribute):
    layer = model.get_layer(owner)
    return getattr(getattr(layer, "layer", layer), attribute)


def _settled_tolerance(bias, unit):
    """How far (in the bias's own terms) a margin snap may find a bias from its target and
    leave it: :data:`OFF_LATTICE_TOLERANCE` units, or, where the units are finer than that,
    eight float32 steps of the folded bias (Keras computes it in float32 and cannot hold it any
    closer: a ResNet101's last projection, units of 6e-6 on biases of 1.6, moved every call)."""
    unit = np.asarray(unit, np.float64)
    float32_step = np.spacing(np.abs(np.asarray(bias, np.float64)).astype(np.float32))
    return np.maximum(OFF_LATTICE_TOLERANCE * unit, 8.0 * float32_step.astype(np.float64))


def _keep_roundings_decidable(model, lattice):
    """Give the folded BN of ``lattice`` the gains and offsets of
    :mod:`tf_qnets.core.rounding_margin` (the other channels: the bias snapped as usual).
    True when a variable changed."""
    beta_variable = _variable(model, lattice.owner, "beta")
    gamma_variable = _variable(model, lattice.scale_owner, "gamma")
    beta = np.asarray(beta_variable, np.float64)
    gamma = np.asarray(gamma_variable, np.float64)
    x = lattice.unit * lattice.lattice / lattice.output_step
    gains, ps, qs = margin_gains(x)
    # a gain within the tolerance: a scale already on its fraction (the margin biases allow
    # for what float32 leaves); a second call is a no-op
    gains = np.where(np.abs(gains - 1.0) < scale_tolerances(qs), 1.0, gains)
    # the folded bias is beta + (bias - mean) g: the gain scales the second term only
    gained_bias = beta + (lattice.bias - beta) * gains
    unit = lattice.unit * gains
    units = margin_biases(gained_bias, unit, ps, qs, lattice.lattice)
    units = np.where(np.isnan(units), np.round(gained_bias / unit), units)
    new_beta = units * unit - (lattice.bias - beta) * gains
    changed = False
    if np.any(gains != 1.0):
        gamma_variable.assign((gamma * gains).astype(np.float32))
        changed = True
    if np.any(np.abs(new_beta - beta) > _settled_tolerance(lattice.bias, unit)):
        beta_variable.assign(new_beta.astype(np.float32))
        changed = True
    return changed


def _output_range_variables(model, name):
    """``(min_var, max_var)`` of the int8 output quantizer of the wrapped layer ``name``: a
    Keras 3 wrapper's ``output_quantizer``, or a tf_keras wrapper's tfmot output variables."""
    layer = model.get_layer(name)
    quantizer = getattr(layer, "output_quantizer", None)
    if hasattr(quantizer, "min_var"):
        return quantizer.min_var, quantizer.max_var
    for role, _, _, variables in layer.quantizer_states():
        if role == "output":
            return variables["min_var"], variables["max_var"]
    raise ValueError(f"Layer {name!r} has no int8 output quantizer.")


def _keep_range_roundings_decidable(model, lattice):
    """The same margin as :func:`_keep_roundings_decidable` for a kernel layer without a BN
    whose channels share one unit ``u`` (a per-tensor weight scale): with ``L_c = g_c L``
    (``L`` the gcd of the lattices), ``x_c = g_c u L / s``, so one gain on the output step
    ``s`` puts ``u L / s`` on ``p / q`` and every ``x_c`` on ``g_c p / q`` (odd ``q``). The
    range ``[lo, hi]`` is divided by the gain (the zero point stays), the bias (if the layer
    has one) moves to the int32 value that keeps the margin. True when a variable changed."""
    live = lattice.lattice < 2 ** 31
    if not np.any(live):
        return False
    lattices = np.round(lattice.lattice[live]).astype(np.int64)
    base = int(np.gcd.reduce(lattices))
    unit = np.asarray(lattice.unit, np.float64)
    gains, ps, qs = margin_gains([unit.flat[0] * base / lattice.output_step])
    if not qs[0]:
        return False
    gain = 1.0 if abs(gains[0] - 1.0) < scale_tolerances(qs)[0] else float(gains[0])
    channel_ps = np.zeros(np.shape(lattice.lattice), np.int64)
    channel_ps[live] = ps[0] * (lattices // base)
    channel_qs = np.where(live, qs[0], 0)
    bias = np.asarray(lattice.bias, np.float64)
    units = margin_biases(bias, unit, channel_ps, channel_qs, lattice.lattice)
    units = np.where(np.isnan(units), np.round(bias / unit), units)
    changed = False
    if gain != 1.0:
        low, high = _output_range_variables(model, lattice.range_owner)
        low.assign(np.float32(float(np.asarray(low)) / gain))
        high.assign(np.float32(float(np.asarray(high)) / gain))
        changed = True
    if lattice.owner is not None and np.any(np.abs(units * unit - bias)
                                            > _settled_tolerance(bias, unit)):
        variable = _variable(model, lattice.owner, lattice.attribute)
        variable.assign((units * unit).astype(np.float32))
        changed = True
    return changed


def snap_if_describable(model, describe, announce=None):
    """:func:`snap_biases` on ``describe(model)``, or nothing where ``describe`` refuses the
    model (``ValueError`` / ``TypeError``: a model the exporter cannot lower has no lattice).

    ``announce`` (a function of one string, or None) hears what happened: the report where a
    bias moved, or why the biases were left as they are. Returns the :class:`SnapReport`, or
    None."""
    try:
        network = describe(model)
    except (ValueError, TypeError) as error:
        if announce is not None:
            announce(f"biases left as they are: the model cannot be described for export "
                     f"({error})")
        return None
    report = snap_biases(model, describe, network=network)
    if announce is not None and (report.moved or report.margins or report.transitions
                                 or report.normalizations or report.sums):
        announce(str(report))
    return report

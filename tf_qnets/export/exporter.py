"""``export_tflite``: a trained tf_qnets model to an integer TFLite file whose codes are the levels.

Steps: check the arguments; describe the model backend-neutrally
(:mod:`tf_qnets.export.describe`: a Keras 2 model, or a Keras 3 model trained on TensorFlow or
JAX); plan the export graph (:mod:`tf_qnets.export.plan`: BN folded, weight codes pinned,
activation staircases lowered to int8 builtins) and calibrate the remaining ranges on
``representative_data`` (:mod:`tf_qnets.export.emit`); convert
(:mod:`tf_qnets.export.convert`); check that only standard builtin integer ops are used
(:mod:`tf_qnets.export.ops_check`); write the file atomically; optionally verify it
against the Keras model (:func:`tf_qnets.export.verify_tflite`).

Example::

    report = tf_qnets.export_tflite(qat, "model.tflite", representative_data=ds.take(16),
                                    verify_data=(x_test, y_test))
    print(report)
"""

import concurrent.futures
import dataclasses

import numpy as np

from tf_qnets.core.calibration_data import input_batches
from tf_qnets.core.lowering import DEFAULT_FINER_INPUTS, check_finer_inputs
from tf_qnets.export.convert import ExportError, check_writable, convert_function, write_atomic
from tf_qnets.export.bias_lattice import traced_bias_lattices
from tf_qnets.export.describe import describe
from tf_qnets.export.emit import calibrate, trace
from tf_qnets.export.plan import make_plan
from tf_qnets.export.inspect import inspect_tflite
from tf_qnets.export.ops_check import find_problems
from tf_qnets.export.verify import verify_tflite

__all__ = ["ExportReport", "export_tflite", "INT4_CHOICES", "MAX_REPRESENTATIVE_BATCHES"]

INT4_CHOICES = ("auto", True, False)
MAX_REPRESENTATIVE_BATCHES = 200


@dataclasses.dataclass
class ExportReport:
    """What :func:`export_tflite` wrote."""

    path: str
    size_bytes: int
    float_size_bytes: int
    inspection: object          # InspectReport of the written file
    verification: object = None  # VerificationReport when verify_data was given
    staircases: dict = None      # {"aligned"|"copies"|"partial"|"sum"|"table"|"rounded": [layer names]}
    reference_exact: float = None  # aligned channels exact under TFLite's reference kernels too
    off_lattice: list = dataclasses.field(default_factory=list)  # kernel layers whose bias the file rounds
    default_lattice: bool = True   # exported with the options whose lattice snap_biases uses

    @property
    def size_ratio(self):
        """File size divided by the size of the same network converted in float32."""
        return self.size_bytes / self.float_size_bytes

    @property
    def ops(self):
        return self.inspection.ops

    @property
    def tensor_dtypes(self):
        return self.inspection.tensor_dtypes

    def __str__(self):
        op_text = ", ".join(f"{name} x{count}" for name, _, count in self.ops)
        dtype_text = ", ".join(f"{k} {v}" for k, v in sorted(self.tensor_dtypes.items()))
        int4 = sum(w.dtype == "INT4" for w in self.inspection.weights)
        lines = [
            f"wrote {self.path}",
            f"size: {self.size_bytes} bytes; float32 TFLite {self.float_size_bytes} bytes; "
            f"ratio {self.size_ratio:.3f} ({int4} of {len(self.inspection.weights)} weight "
            "tensors stored as INT4)",
            f"ops: {op_text}",
            f"tensor dtypes: {dtype_text}",
            "io: " + ", ".join(f"{kind} {dtype}" for kind, items in
                               (("input", self.inspection.inputs), ("output", self.inspection.outputs))
                               for _, dtype, _ in items),
        ]
        if self.staircases:
            lines.append(
                "activation staircases: "
                f"{len(self.staircases['aligned'])} aligned (exact, one layer"
                + (f"; {100 * self.reference_exact:.1f}% of their channels exact in the reference "
                   "kernels too" if self.reference_exact is not None else "") + "), "
                f"{len(self.staircases['copies'])} per-threshold copies (exact), "
                f"{len(self.staircases.get('partial', []))} partly aligned, "
                f"{len(self.staircases.get('sum', []))} the requantization of an addition, "
                f"{len(self.staircases.get('table', []))} a table of their int8 input's codes (exact), "
                f"{len(self.staircases['rounded'])} read a rounded int8 tensor"
                + (f" ({', '.join(self.staircases['rounded'])})" if self.staircases["rounded"] else ""))
        if self.off_lattice:
            lines.append(
                f"biases off the int32 lattice: {len(self.off_lattice)} kernel layers "
                f"({', '.join(self.off_lattice[:4])}{', ...' if len(self.off_lattice) > 4 else ''}); "
                "the file rounds them, so it can differ from the Keras model on some inputs: "
                + ("tf_qnets.snap_biases(model) moves them (TemperatureScheduler does at the end "
                   "of fit)" if self.default_lattice else
                   f"export with int4_weights=False and finer_inputs={DEFAULT_FINER_INPUTS!r}, "
                   "the lattice that tf_qnets.snap_biases(model) and TemperatureScheduler move "
                   "them onto (for other finer_inputs, train with "
                   "TemperatureScheduler(snap_biases=False) and call "
                   "tf_qnets.snap_biases(model, finer_inputs=...) with the same value)"))
        if self.verification is not None:
            lines.append(f"verification: {self.verification}")
        return "\n".join(lines)


def _some(items, count, separator=", "):
    """The first ``count`` of ``items`` joined, with how many more there are."""
    shown = separator.join(items[:count])
    return shown + (f"{separator}... ({len(items) - count} more)" if len(items) > count else "")


def _representative_batches(data, network):
    if data is None:
        raise ValueError(
            "`representative_data` is required: a few batches of typical inputs (e.g. "
            "`train_ds.take(16)` or an array of ~500 samples) to calibrate the int8 ranges.")
    specs = list(zip(network.input_names, network.input_shapes))
    batches = input_batches(data, specs, argument="representative_data",
                            max_batches=MAX_REPRESENTATIVE_BATCHES)
    for batch in batches:
        dtype = np.asarray(batch).dtype
        if dtype.kind not in "iuf":
            raise TypeError(
                f"`representative_data` must hold real numbers (int or float), got dtype {dtype}.")
    return batches


def export_tflite(qat_model, path, representative_data, *, int8_io=False, int4_weights=False,
                  verify_data=None, exact_uniform=False,
                  finer_inputs=DEFAULT_FINER_INPUTS):
    """Export a :func:`tf_qnets.quantize_model` result to an integer TFLite file.

    Args:
      qat_model: the (fine-tuned) model returned by ``tf_qnets.quantize_model``: a Keras 2
        (tf_keras) model, or a Keras 3 model trained on the TensorFlow or the JAX backend
        (TensorFlow is imported here, at export, not before).
      path: the .tflite file to write (atomically; an existing file is replaced only on success).
      representative_data: typical inputs (Dataset of x or (x, y) batches, or an array) that
        calibrate the ranges the model does not fix itself (input, unfolded BN, Add, pooling).
      int8_io: int8 input and output tensors instead of float32 with QUANTIZE/DEQUANTIZE.
      int4_weights: ``False`` (default) stores every kernel in int8 (low-bit codes as
        ``k * level`` where that makes the activation staircase after the layer exact);
        ``"auto"`` packs low-bit kernels with levels in -7..7 as INT4 (a smaller file, slower
        in XNNPACK, which runs INT4 convolutions in no fast kernel, and fewer exact
        staircases); ``True`` requires INT4 for every low-bit layer. Figures:
        docs/export.md.
      verify_data: optional inputs or (inputs, labels) to compare the file with the model.
      exact_uniform: lower every uniform staircase read from a kernel layer to one layer copy
        per threshold with exact integer biases (as non-uniform ones always are), at the cost
        of the copies. ``False`` (default): one kernel layer whose per-channel integer bias
        and weight scale are chosen so that its single int8 requantization gives the Keras
        code for every possible accumulator (:mod:`tf_qnets.core.alignment`); where no such
        choice exists and the layer reads the model input, per-threshold copies of that
        layer. Both give the Keras codes wherever the layer's input is itself exact
        (docs/export.md, "How the file stays exact").
      finer_inputs: a kernel layer that reads a saturating staircase (levels ``0..n`` at
        scale ``alpha``) and is not aligned to a staircase of its own (a linear projection
        before a residual ``Add``) can read it re-stored at scale ``alpha / m``,
        ``m = 255 // n``, by one requantizing MUL: no value changes and the layer's int32 bias
        unit becomes ``m`` times finer, so the biases snapped onto it move less and the file
        agrees more with the Keras model under TFLite's reference kernels (two roundings per
        requantization, as TFLite Micro). ``"auto"`` (default): for the layers doing at least
        128 multiply-adds per value they read (``C_out kh kw / (sh sw)``), beside which the
        MUL is small (every such layer of ResNet50 and DenseNet121, 4 of MobileNetV2's 17
        projections, whose 17 MULs made its file 14-17% slower); ``True``: for every such layer;
        ``False``: none. The file is exact for a model snapped onto the same choice's lattice
        (``tf_qnets.snap_biases(model, finer_inputs=...)``; ``quantize_model`` and
        ``TemperatureScheduler`` snap onto the default's). Figures: docs/export.md.

    Returns:
      :class:`ExportReport` (``print`` it for ops, dtypes, size, ratio and agreement).

    Raises:
      TypeError / ValueError: bad model, data or options (messages name the argument).
      PermissionError / FileNotFoundError: the path cannot be written.
      ExportError: the converter failed or produced non-builtin / float ops.
    """
    network, native = describe(qat_model)
    path = check_writable(path)
    if int4_weights not in INT4_CHOICES or isinstance(int4_weights, int) and not isinstance(
            int4_weights, bool):
        raise ValueError(f"`int4_weights` must be one of {INT4_CHOICES}, got {int4_weights!r}.")
    if not isinstance(int8_io, bool):
        raise TypeError(f"`int8_io` must be a bool, got {int8_io!r}.")
    if not isinstance(exact_uniform, bool):
        raise TypeError(f"`exact_uniform` must be a bool, got {exact_uniform!r}.")
    check_finer_inputs(finer_inputs)
    batches = _representative_batches(representative_data, network)

    plan = make_plan(network, int4_weights=int4_weights, exact_uniform=exact_uniform,
                     finer_inputs=finer_inputs, native=native)
    # The float file (only its size is reported) needs no ranges: it converts in a second
    # thread while this one calibrates, traces and converts the integer file (the converter
    # releases the GIL for most of its work).
    float_function, _ = trace(plan, None, quantize=False)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        float_file = pool.submit(convert_function, float_function, quantize=False, quiet=False)
        ranges = calibrate(plan, batches)
        function, lowering = trace(plan, ranges)
        data = convert_function(function, int8_io=int8_io)
        problems = find_problems(data)
        if problems:
            layers = sorted({p.split(" in layer ")[1] for p in problems if " in layer " in p})
            raise ExportError(
                "The converted model is not pure builtin int8"
                + (f"; {len(layers)} layers block an all-integer file: {_some(layers, 8)}"
                   if layers else "")
                + ": " + _some(problems, 4, separator="; "))
        float_size = len(float_file.result())

    write_atomic(path, data)
    report = ExportReport(path=path, size_bytes=len(data), float_size_bytes=float_size,
                          inspection=inspect_tflite(path), staircases=lowering.staircase_lowerings(),
                          reference_exact=lowering.reference_exact_fraction(),
                          off_lattice=[lattice.layer for lattice in
                                       traced_bias_lattices(plan, lowering)
                                       if lattice.owner is not None and not lattice.on_lattice],
                          default_lattice=int4_weights is False
                          and finer_inputs == DEFAULT_FINER_INPUTS)
    if verify_data is not None:
        report.verification = verify_tflite(qat_model, path, verify_data)
    return report

"""Integer numerics of a lowered activation staircase: code windows, scales, multipliers.

The exporter (``tf_qnets.export.activations``) lowers a hard staircase
``y = alpha * (-o + sum_i s_i [beta x > b_i])`` to int8 TFLite builtins; this module holds
the arithmetic it decides with, free of any framework:

* the int8 code window of a level set (``[0, 255]`` unsigned, ``[-128, 127]`` signed);
* whether thresholds are the uniform ones (``b_i = y_{i-1} + 1/2``, unit steps), which
  lower to rounding;
* the code multiplier ``m`` (level ``y`` stored as ``m y``, scale ``alpha / m``) and the
  saturating range ``[(n - 255) alpha, n alpha]`` of levels ``0 .. n`` (scale ``alpha``,
  zero point ``127 - n``: int8 saturation is the top clip, a fused ReLU the bottom one).

Example::

    >>> from tf_qnets.core.levels import activation_levels
    >>> code_range(activation_levels(3)), code_multiplier(activation_levels(3))
    ((0, 255), 36)
    >>> saturating_range(0.5, activation_levels(3))
    (-124.0, 3.5)
"""

import numpy as np

__all__ = ["DEFAULT_FINER_INPUTS", "FINER_INPUT_FACTOR",
           "FINER_INPUT_MIN_WORK", "UNIFORM_TOLERANCE", "check_finer_inputs", "check_scales",
           "code_multiplier", "code_range", "decision_step", "finer_input_multiplier",
           "has_saturating_lowering", "is_table_staircase", "is_uniform_staircase",
           "multiply_adds_per_input_value", "output_code_multiplier", "output_range",
           "saturating_range", "TABLE_ACTIVATION_LAYERS", "wants_finer_input"]

UNIFORM_TOLERANCE = 1e-5
# A finer input (levels 0..n re-stored at scale alpha / m) is one MUL by this factor, 2**-20
# above 1: a FakeQuant right after another one is dropped by the TFLite converter, a MUL is kept.
FINER_INPUT_FACTOR = np.float32(1.0 + 2.0 ** -20)
# Whether export_tflite re-stores a staircase finer before a linear kernel layer: True (every
# such layer), False (none) or "auto" (the layers for which the MUL is cheap, below). The bias
# lattice that quantize_model and TemperatureScheduler snap to follows the default (measured
# all three ways: docs/export.md, "A linear layer reading a staircase").
DEFAULT_FINER_INPUTS = "auto"
# "auto" gives a layer its finer input when it does at least this many multiply-adds per value
# it reads, so that the requantizing MUL (one op per value read) is small beside the layer.
# ResNet50's and DenseNet121's linear layers do 128 to 2048 (their 20 and 61 MULs: 7-11% of
# the 224x224 file's latency); MobileNetV2's projections 16 to 96, but 160 and 320 the last
# four (its 17 MULs: 14-17%, which took the file over 0.7x the float32 latency).
FINER_INPUT_MIN_WORK = 128


def check_finer_inputs(finer_inputs):
    """Raise ``TypeError`` unless ``finer_inputs`` is ``True``, ``False`` or ``"auto"``."""
    is_auto = isinstance(finer_inputs, str) and finer_inputs == "auto"
    if not (isinstance(finer_inputs, bool) or is_auto):
        raise TypeError(f"`finer_inputs` must be True, False or \"auto\", got {finer_inputs!r}.")


def multiply_adds_per_input_value(layer):
    """Multiply-adds a kernel layer does per value of its input (``layer``: a
    :class:`tf_qnets.core.network.LayerDescription` with ``class_name`` and
    ``config``)::

        Dense: units            Conv: filters * prod(kernel_size) / prod(strides)
        DepthwiseConv2D: depth_multiplier * prod(kernel_size) / prod(strides)

    (padding ignored). Example: a 1x1 ``Conv2D`` with 24 filters does 24; a 3x3 one with 32
    filters and stride 2 does 72.
    """
    config = layer.config
    if layer.class_name == "Dense":
        return float(config.get("units", 1))
    kernel = float(np.prod(config.get("kernel_size", (1,))))
    strides = float(np.prod(config.get("strides", (1,))))
    per_position = (config.get("depth_multiplier", 1) if layer.class_name == "DepthwiseConv2D"
                    else config.get("filters", 1))
    return float(per_position) * kernel / strides


def wants_finer_input(layer, finer_inputs):
    """Whether the export re-stores the saturating staircase that the plain kernel ``layer``
    reads ``m`` times finer (one requantizing MUL), for ``export_tflite(...,
    finer_inputs=finer_inputs)``: always (True), never (False), or ("auto") when the layer does
    at least :data:`FINER_INPUT_MIN_WORK` multiply-adds per value it reads
    (:func:`multiply_adds_per_input_value`)."""
    if finer_inputs == "auto":
        return multiply_adds_per_input_value(layer) >= FINER_INPUT_MIN_WORK
    return bool(finer_inputs)


def code_range(levels):
    """The int8 code window ``[c_min, c_min + 255]`` that holds every level (unsigned or signed)."""
    c_min = 0 if levels.levels[0] >= 0 else -128
    if levels.levels[-1] > c_min + 255 or levels.levels[0] < c_min:
        raise ValueError(f"Activation levels {levels.levels} do not fit an int8 code window.")
    return c_min, c_min + 255


def is_uniform_staircase(thresholds, levels):
    """True when steps are all 1 and ``b_i = y_{i-1} + 1/2`` (within 1e-5)."""
    if set(levels.steps) != {1}:
        return False
    return bool(np.allclose(np.asarray(thresholds, np.float64), levels.uniform_thresholds(),
                            rtol=0.0, atol=UNIFORM_TOLERANCE))


def check_scales(alpha, beta, name):
    if not (np.isfinite(alpha) and np.isfinite(beta) and alpha > 0 and beta > 0):
        raise ValueError(
            f"Quantizer {name!r}: alpha={alpha} and beta={beta} must be finite and > 0 to export "
            "an integer staircase.")


def code_multiplier(levels):
    """Largest ``m`` with every ``m * level`` inside the int8 code window."""
    c_min, c_max = code_range(levels)
    low, high = levels.levels[0], levels.levels[-1]
    bounds = [c_max // high if high > 0 else 255, (-c_min) // (-low) if low < 0 else 255]
    return max(1, min(bounds))


def output_range(alpha, levels):
    """Fake-quant range of the staircase output: scale ``alpha / m``, level ``y`` stored as ``m y``.

    The finer scale does not change any value (``alpha y`` is on the grid); it makes the
    next layer's accumulator unit ``(alpha / m) * weight scale`` ``m`` times finer, so the
    int32 bias (quantized in that unit) shifts the next staircase's decisions ``m`` times less.
    """
    c_min, c_max = code_range(levels)
    m = code_multiplier(levels)
    return c_min * alpha / m, c_max * alpha / m


def saturating_range(alpha, levels):
    """Fake-quant range ``[(n - 255) alpha, n alpha]`` of a staircase with levels ``0 .. n``:
    scale ``alpha``, zero point ``127 - n``, so int8 saturation clips at the top level ``n``
    and a fused ReLU at level 0."""
    top = int(levels.levels[-1])
    return (top - 255) * alpha, top * alpha


def output_code_multiplier(thresholds, levels):
    """``m`` with level ``y`` stored as ``m * y`` by :func:`lower_staircase`: 1 for the
    saturating lowering (uniform thresholds, levels ``0 .. n``), else :func:`code_multiplier`."""
    if has_saturating_lowering(levels) and is_uniform_staircase(thresholds, levels):
        return 1
    return code_multiplier(levels)


def has_saturating_lowering(levels):
    """True for uniform levels ``0 .. n`` (unit steps from 0): lowered by saturation."""
    return levels.levels[0] == 0 and set(levels.steps) == {1} and levels.levels[-1] <= 255


def decision_step(thresholds):
    """Default grid step of a per-threshold decision window: 1/254 of the largest ``|t_i|``
    (only the sign of the windowed value is used)."""
    span = float(np.max(np.abs(thresholds))) if len(thresholds) else 1.0
    return max(span, 1e-6) / 254.0


def finer_input_multiplier(top_level):
    """``m = 255 // n``: levels ``0 .. n`` of a saturating staircase re-stored as codes
    ``m v - 128`` (scale ``alpha / m``) for a kernel layer that reads them (a finer input;
    ``m < 2``: none)."""
    return 255 // max(int(top_level), 1)


# Layers computing one elementwise function of one tensor: a staircase on one of them that
# reads a fixed int8 tensor is lowered as a table of that tensor's 256 codes.
TABLE_ACTIVATION_LAYERS = frozenset({"Activation", "ReLU", "LeakyReLU", "ELU", "PReLU",
                                     "Softplus"})


def is_table_staircase(layer, source):
    """True when export lowers the staircase of the described ``layer`` as a table of its
    input's int8 codes (:mod:`tf_qnets.export.rewrites.code_staircase`): an elementwise
    activation that is not a ReLU (swish, sigmoid, ...) with a staircase, whose one input
    comes from ``source``, a layer with an 8-bit output range (``None``: a model input).
    Its output then has the scale ``alpha / m`` (:func:`output_range`), level ``v`` stored as
    ``m v`` (:func:`code_multiplier`)."""
    from tf_qnets.core.network import Int8Range, Staircase, relu_cap

    return (source is not None and layer.class_name in TABLE_ACTIVATION_LAYERS
            and isinstance(layer.output_quantizer, Staircase) and not relu_cap(layer)[0]
            and isinstance(source.output_quantizer, Int8Range))

"""Integer lowering of a hard activation staircase ``y = alpha * (-o + sum_i s_i [beta x > b_i])``.

Everything here is built from TFLite int8 builtins (fake-quant ranges fix every
tensor's scale, so no float op survives conversion).

**Uniform** thresholds (unit steps, ``b_i`` halfway between levels ``y_0 .. y_n``):
the staircase is rounding, ``y = alpha * clip(round(beta x), y_0, y_n)``. With levels
``0 .. n`` (activations) the clip costs no op: the output has scale ``alpha`` and zero point
``127 - n`` (range ``[(n - 255) alpha, n alpha]``), so int8 saturation is the top clip and a
fused ReLU the bottom one::

    q  = FakeQuant8(x, [0, 255/beta])            # only if x has no int8 range yet: round(beta x)
    y  = FakeQuant8(relu(q * alpha beta), [(n - 255) alpha, n alpha])   # code = level + 127 - n

one MUL with a fused ReLU (:func:`saturating_range`). When ``x`` is a kernel layer's output,
the export graph scales that layer by ``alpha beta`` instead, so the staircase is the
layer's own requantization and fused ReLU: no op at all. Signed levels keep an explicit clip::

    q  = FakeQuant8(clip(x, y_0/beta, y_n/beta), scale 1/beta)    # code = round(beta x)
    y  = FakeQuant8(q * (alpha beta), scale alpha / m)            # code m * level

with ``m`` the largest integer keeping ``m y`` in the int8 window (see :func:`_output_range`).

**Non-uniform** thresholds (k-means or learned): ``x`` is put on a fine int8 grid of step
``d`` covering ``[min(0, t_1), t_n]`` (``t_i = b_i / beta``), each threshold is snapped
to the largest grid point ``tau_i <= t_i`` (on the grid ``x > t_i`` iff ``x - tau_i >= d``)::

    h_i = minimum(relu(x_q - tau_i), d)                           # 0 or d      (SUB, MINIMUM)
    y   = -alpha o + sum_i (alpha s_i / d) * h_i                  # MUL, ADD at scale alpha/m

A decision can differ from float Keras only where ``beta x`` lies within one grid step
of a threshold. Comparison ops (GREATER + CAST) are avoided: they bring float ops back.

When the staircase reads a kernel layer directly, the export graph uses
:func:`lower_staircase_direct` instead (one copy of the layer per threshold, the threshold
in its int32 bias): every decision is then exact, at the cost of the copies.

Example (in a ``tf.function`` traced for conversion)::

    y = lower_staircase(x, alpha=0.5, beta=2.0, thresholds=[0.5, 1.5, 2.5], levels=activation_levels(2))
"""

import numpy as np

from tf_qnets.core.lowering import (  # noqa: F401  (re-exported: the lowering's numerics)
    check_scales,
    code_multiplier,
    code_range,
    decision_step,
    has_saturating_lowering,
    is_uniform_staircase,
    output_code_multiplier,
    output_range,
    saturating_range,
)
from tf_qnets.keras2.backend import tf

__all__ = ["is_uniform_staircase", "lower_staircase", "lower_staircase_direct", "decision_step",
           "code_range", "saturating_range", "has_saturating_lowering", "is_int8_tensor",
           "output_code_multiplier",
           "code_multiplier", "fake_quant"]


def fake_quant(x, lo, hi):
    """8-bit, wide-range per-tensor FakeQuant."""
    return tf.quantization.fake_quant_with_min_max_args(x, float(lo), float(hi), num_bits=8)


def is_int8_tensor(x):
    """True when ``x`` is the output of an 8-bit fake-quantization (an int8 tensor in TFLite)."""
    op = getattr(x, "op", None)
    return op is not None and op.type.startswith("FakeQuantWithMinMax") and op.get_attr("num_bits") == 8


# ``alpha * beta`` is exactly 1 right after initialisation; the converter drops a MUL by 1 and
# leaves a RELU that requantizes on its own, less exactly than MUL does. A factor 2**-20 above
# 1 keeps the MUL; it moves a decision only where ``beta x`` lies within 2**-20 of a threshold.
_UNIT_FACTOR = np.float32(1.0 + 2.0 ** -20)


def _saturating(x, alpha, beta, levels):
    if not is_int8_tensor(x):
        # Eager values, or a tensor without an int8 range yet (a kernel layer's output): put
        # it on the grid of step 1/beta (negative values saturate to 0).
        x = fake_quant(x, 0.0, 255.0 / beta)
    factor = np.float32(alpha * beta)
    factor = _UNIT_FACTOR if factor == 1.0 else factor
    return fake_quant(tf.nn.relu(x * factor), *saturating_range(alpha, levels))


def _uniform(x, alpha, beta, levels):
    if has_saturating_lowering(levels):
        return _saturating(x, alpha, beta, levels)
    c_min, c_max = code_range(levels)
    lo, hi = c_min / beta, c_max / beta
    x = fake_quant(x, lo, hi)
    x = tf.minimum(tf.maximum(x, levels.levels[0] / beta), levels.levels[-1] / beta)
    x = fake_quant(x, lo, hi)
    factor = np.float32(alpha * beta)
    if factor == 1.0:
        # The converter drops a multiplication by exactly 1 and then mis-assigns the scales of
        # the two fake-quantizations around it; doubling first (exact: codes unchanged, scale
        # doubled) keeps a real MUL that does the requantization.
        x = fake_quant(x * np.float32(2.0), 2 * lo, 2 * hi)
        factor = np.float32(0.5)
    return fake_quant(x * factor, *output_range(alpha, levels))


def _grid(lo, hi):
    """TensorFlow's nudged 8-bit grid for ``[lo, hi]``: ``(nudged_lo, step)``."""
    step = (hi - lo) / 255.0
    zero_point = round(min(max(-lo / step, 0.0), 255.0))
    return -zero_point * step, step


def _nonuniform(x, alpha, beta, thresholds, levels):
    order = np.argsort(thresholds, kind="stable")
    t = np.asarray(thresholds, np.float64)[order] / beta
    steps = np.asarray(levels.steps)[order]
    lo = min(0.0, t[0])
    hi = max(t[-1], 0.0)
    span = hi - lo if hi > lo else 1.0
    lo, hi = lo - (span / 254.0 if lo < 0 else 0.0), hi + span / 254.0
    grid_lo, d = _grid(lo, hi)
    grid_hi = grid_lo + 255.0 * d
    out_lo, out_hi = output_range(alpha, levels)
    x = fake_quant(x, grid_lo, grid_hi)
    y = None
    for t_i, s_i in zip(t, steps):
        tau = grid_lo + np.floor((t_i - grid_lo) / d + 1e-6) * d
        v = fake_quant(x - np.float32(tau), grid_lo - tau, grid_hi - tau)
        h = tf.minimum(tf.nn.relu(v), np.float32(d))
        h = fake_quant(h, grid_lo - tau, grid_hi - tau)
        term = fake_quant(h * np.float32(alpha * s_i / d), out_lo, out_hi)
        y = term if y is None else fake_quant(y + term, out_lo, out_hi)
    if levels.offset:
        y = fake_quant(y - np.float32(alpha * levels.offset), out_lo, out_hi)
    return y


def lower_staircase_direct(pre_activation, relu, alpha, beta, thresholds, levels, step=None,
                           name="activation"):
    """A non-uniform staircase whose decisions are taken on the int32 accumulator.

    ``pre_activation(t, gain)`` builds one copy of the kernel layer (BN folded, no
    activation, ``v`` its output) whose value ``w``, requantized to the window
    ``gain * [-128 d, 127 d]`` (``d = step``, zero point 0), is at least one step exactly
    when ``v > t`` and at most zero otherwise; e.g. ``w = gain * (v - t + d/2)``, exact up
    to the int32 bias rounding (the export graph uses an exact integer bias instead).
    Copy ``i`` uses ``gain = 1 + i/64``, which keeps every decision and stops the
    converter from merging the copies into one float layer. ``relu`` says whether a ReLU
    comes before the staircase. With ``t_i = b_i / beta`` (sorted)::

        h_i = minimum(relu(w_i), d)            # 0 or d
        y   = sum_i (alpha s_i / d) h_i - alpha (o - c)

    accumulated from the first term down by the offset first, so every partial sum is a
    level of the staircase and stays inside the output window. With ``relu``, a
    threshold below zero is always passed (``relu(v) >= 0 > t_i``): its step joins the
    constant ``c``. Costs one kernel-layer copy per threshold.

    Example (``conv`` a function of the bias shift and gain)::

        y = lower_staircase_direct(conv, True, 0.5, 2.0, [0.3, 1.1, 2.9], activation_levels(2))
    """
    alpha, beta = float(alpha), float(beta)
    check_scales(alpha, beta, name)
    thresholds = np.asarray(thresholds, np.float64)
    order = np.argsort(thresholds, kind="stable")
    t = thresholds[order] / beta
    steps = np.asarray(levels.steps)[order]
    out_lo, out_hi = output_range(alpha, levels)
    d = decision_step(t) if step is None else float(step)
    constant = -float(levels.offset)
    y = None
    for index, (t_i, s_i) in enumerate(zip(t, steps)):
        if relu and t_i < 0:
            constant += float(s_i)
            continue
        gain = 1.0 + index / 64.0
        d_i = d * gain
        w = fake_quant(pre_activation(t_i, gain), -128.0 * d_i, 127.0 * d_i)
        h = fake_quant(tf.minimum(tf.nn.relu(w), np.float32(d_i)), -128.0 * d_i, 127.0 * d_i)
        term = fake_quant(h * np.float32(alpha * s_i / d_i), out_lo, out_hi)
        if y is None:
            y = term
            if constant:
                y = fake_quant(y + np.float32(alpha * constant), out_lo, out_hi)
        else:
            y = fake_quant(y + term, out_lo, out_hi)
    if y is None:  # every threshold below a ReLU: the top level everywhere
        zero = fake_quant(0.0 * tf.nn.relu(pre_activation(0.0, 1.0)), out_lo, out_hi)
        y = fake_quant(zero + np.float32(alpha * constant), out_lo, out_hi)
    return y


def lower_staircase(x, alpha, beta, thresholds, levels, name="activation"):
    """The int8-exact graph of a hard activation staircase (see the module docstring)."""
    alpha, beta = float(alpha), float(beta)
    check_scales(alpha, beta, name)
    thresholds = np.asarray(thresholds, np.float64)
    if is_uniform_staircase(thresholds, levels):
        return _uniform(x, alpha, beta, levels)
    return _nonuniform(x, alpha, beta, thresholds, levels)

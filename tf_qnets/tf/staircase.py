"""The staircase of Quantization Networks in TensorFlow: the fast kernels, no Keras.

The definition (numpy, the plain sum) is ``tf_qnets.core.staircase``; this module computes
the same values and gradients fast.

Notation (Yang et al., "Quantization Networks", CVPR 2019, Sec. 3): levels
``y_0 < ... < y_n``, step heights ``s_i = y_i - y_{i-1}``, offset ``o = -y_0``,
thresholds ``b_1 < ... < b_n`` in the beta-scaled domain, input scale ``beta``,
output scale ``alpha`` and temperature ``T``.

Hard (inference) form::

    y = alpha * ( sum_i s_i * [beta * x > b_i] - o )            (strict ">")

Soft (training) form, with the authors' clamp of the sigmoid argument::

    y = alpha * ( sum_i s_i * sigmoid(clip(T * (beta * x - b_i), -10, 10)) - o )

Gradients of the soft form (``sigma_i`` the clamped sigmoid, ``d_i = sigma_i (1 - sigma_i)``
where ``|T (beta x - b_i)| <= 10`` and 0 outside the clamp)::

    dy/dx     = alpha * beta * T * sum_i s_i d_i
    dy/dbeta  = alpha * x    * T * sum_i s_i d_i
    dy/db_i   = -alpha * T * s_i d_i
    dy/dalpha = sum_i s_i sigma_i - o

``gradient="wide"`` is the authors' backward for binary weights: ``d_i`` is
evaluated at temperature 1 (``sigmoid(clip(beta x - b_i, -10, 10))``) and still
multiplied by ``T``, a wider gradient window.

``gradient="smooth"`` evaluates the whole derivative at the gradient temperature
``T_g = min(T, SMOOTH_TEMPERATURE)`` (2) instead of ``T``::

    dy/dx = alpha * beta * T_g * sum_i s_i d_i(T_g)        (likewise for beta and b_i)

Each threshold's term still integrates to ``alpha * s_i`` over ``x``, as the exact
one does, but is spread over about ``+-2 / T_g`` instead of ``+-2 / T`` around it: at
the high temperatures of a short fine-tune the exact gradient reaches only the few
inputs that sit right at a threshold (with weights up to ``T / 4``), the smooth one
every input inside the staircase's range (about ``alpha * beta`` between thresholds
one unit apart), a lower-variance estimate of the same average slope. The forward
pass is unchanged. It is :func:`tf_qnets.quantize_model`'s default for activations
(``activation_gradient``; its measured effect on accuracy is in docs/train.md).

Cost. The clamp makes every threshold farther than ``10 / T`` from ``beta * x``
contribute the constant ``s_i * sigmoid(+-10)`` and no gradient, so only the nearest
thresholds need a sigmoid. :func:`soft_staircase` uses that in three ways:

* evenly spaced thresholds with equal steps (the default for activations, checked on
  every call): the nearest threshold is ``round((beta x - b_0) / g)``, pure arithmetic,
  and ``m = min(2 W + 1, n)`` thresholds suffice, ``W = 0`` once ``T g > 20``, 1 at
  ``T g = 10``, 5 at the smooth gradient's ``T g = 2``, 10 at ``T g = 1``; one
  exponential per element serves the whole window (``exp(-T (u - b_{f+k})) =
  exp(-T (u - b_f)) exp(T g)^k``); a few compiled widths (``UNIFORM_WIDTHS``); the
  cost does not depend on ``n``;
* other sets of up to ``PLAIN_MAX`` thresholds (weights: k-means, powers of two): the
  few sigmoids are summed directly, with scalar thresholds;
* larger other sets (and evenly spaced ones below ``T g = 0.95``): a lookup grid over
  the thresholds (:func:`_grid`) gives each element the first threshold that is not
  clamped, with one table lookup and no search; a static window of ``K`` thresholds from
  there (``K``: the most any grid cell leaves unclamped) is summed, the clamped rest is a
  prefix sum: ``K`` sigmoids per element, whatever ``n``.

By default both passes are compiled with XLA on their own (``implementation="xla"``):
one fused loop over the elements each, while the rest of the model keeps TensorFlow's
regular kernels. In a graph each call adds three call ops (the kernel choice, the
forward pass, the gradients), each traced once per level set and dtype whatever the input
shapes: a network's hundreds of quantizers keep its training step small to build
(docs/train.md, "The first batch"). The backward pass keeps only ``x`` and the output (no per-threshold
tensor) and recomputes the sigmoids; the scale gradients are sums of products.
:func:`soft_staircase_reference` is the plain sum, kept for tests and export.
Measured step times: docs/benchmarks.md.

Every tensor keeps the rank of ``x`` (a 5-D broadcast ``x[..., None] - b``
breaks TFLite conversion).

Example::

    >>> import tensorflow as tf
    >>> from tf_qnets.core.levels import weight_levels
    >>> from tf_qnets.tf.staircase import hard_staircase
    >>> ls = weight_levels(2)                       # {-1, 0, 1}
    >>> hard_staircase(tf.constant([-0.3, 0.01, 0.2]), 0.5, 1.0, [-0.05, 0.05], ls).numpy()
    array([-0.5,  0. ,  0.5], dtype=float32)

Non-finite inputs (a defined contract, pinned by tests/test_properties.py): NaN in gives
NaN out in both forms, so a broken input is visible rather than silently mapped to a level;
``+inf``/``-inf`` give the top/bottom of the staircase (the hard levels, or the clamped
ends of the soft form). Their gradients are zero and leave the scales' gradients finite.
"""

import math

import numpy as np
import tensorflow as tf

from tf_qnets.core.staircase import (  # noqa: F401  (re-exported: the TF path's names)
    CLAMP,
    DEFAULT_ACTIVATION_GRADIENT,
    GRADIENTS,
    SMOOTH_TEMPERATURE,
)

__all__ = [
    "CLAMP",
    "GRADIENTS",
    "IMPLEMENTATIONS",
    "hard_staircase",
    "hard_staircase_compiled",
    "hard_staircase_kernel",
    "run_padded_to_bucket",
    "soft_staircase",
    "soft_staircase_reference",
]

IMPLEMENTATIONS = ("xla", "graph")
# Level sets with at most this many thresholds sum every sigmoid (cheaper than a search).
PLAIN_MAX = 15
# Larger sets that are not evenly spaced: cells per threshold of the lookup grid that finds
# each element's window (see _grid), and the window sizes compiled (the smallest that
# covers every cell runs).
GRID_CELLS_PER_THRESHOLD = 4
GRID_WINDOW_SIZES = (16,)
# Wider windows (very low T, tightly clustered thresholds) loop over the window in chunks
# instead: one kernel, compiled fast, whatever the width.
GRID_LOOP = "loop"
GRID_LOOP_CHUNK = 8
# Evenly spaced thresholds of equal steps (default activations) from this many on use
# the arithmetic nearest-threshold window instead of the sum or the search ...
UNIFORM_MIN = 3
# ... when T is high enough that at most this many neighbours per side need a sigmoid
# (10 reaches T g = 1: the initial temperature, and twice below the smooth gradient's).
UNIFORM_MAX_WIDTH = 10
# The uniform widths compiled (a width runs on the smallest of them that is at least as
# wide: extra thresholds are exact, merely clamped). Few kernels keep the graph small:
# every one is traced into the training step. 1 at T g = 10, 5 at the smooth T g = 2.
UNIFORM_WIDTHS = (0, 1, 3, 5, 10)
_SIG_HI = 1.0 / (1.0 + math.exp(-CLAMP))
_SIG_LO = 1.0 / (1.0 + math.exp(CLAMP))


def _as_float(value, dtype):
    # dtype_hint: a Python float becomes ``dtype`` directly, not float32 first.
    return tf.cast(tf.convert_to_tensor(value, dtype_hint=dtype), dtype)


def _sorted_table(thresholds, levels, dtype):
    """Sort thresholds with their step heights; return (b, s, prefix sums S with S[0] = 0)."""
    b = _as_float(thresholds, dtype)
    steps = tf.constant(np.asarray(levels.steps, dtype=np.float32), dtype=dtype)
    order = tf.argsort(b, stable=True)
    b = tf.gather(b, order)
    s = tf.gather(steps, order)
    prefix = tf.concat([tf.zeros([1], dtype), tf.cumsum(s)], axis=0)
    return b, s, prefix, order


def _count_below(u, b, n):
    """Number of sorted thresholds strictly below ``u``, by branch-free bisection.

    Costs ``ceil(log2(n + 1))`` gathers from the threshold table; keeps ``u``'s shape.
    NaN compares false everywhere and counts 0.
    """
    j = tf.zeros(tf.shape(u), tf.int32)
    step = 1 << (n.bit_length() - 1)
    while step >= 1:
        candidate = j + step
        probe = tf.gather(b, tf.minimum(candidate, n) - 1)
        j = tf.where((candidate <= n) & (probe < u), candidate, j)
        step //= 2
    return j


def _grid(b, n, temperature):
    """The lookup grid that finds each element's window among sorted thresholds ``b``.

    ``M = GRID_CELLS_PER_THRESHOLD * n`` cells of width ``h`` cover
    ``[b_0 - r, b_{n-1} + r]``, ``r = 10 / T`` (widened by a margin for rounding);
    cell ``c`` starts at ``start + c h``. For every input ``u`` in cell ``c``, the
    thresholds below ``first[c]`` (those under the cell's start minus ``r``) are more than
    ``10 / T`` below ``u`` and those from ``last[c]`` on are more than ``10 / T`` above it:
    both clamped. Returns ``(start, h, first, last)``; ``O(M n)`` comparisons on the
    thresholds alone, nothing per element.
    """
    dtype = b.dtype
    cells = GRID_CELLS_PER_THRESHOLD * n
    scale = tf.maximum(tf.abs(b[0]), tf.abs(b[n - 1]))
    reach = CLAMP / temperature * (1.0 + 1e-3) + 1e-5 * scale
    start = b[0] - reach
    h = (b[n - 1] + reach - start) / float(cells)
    edges = start + h * tf.range(cells + 1, dtype=dtype)
    first = tf.reduce_sum(tf.cast(b[None, :] < (edges[:-1] - reach)[:, None], tf.int32), axis=1)
    last = tf.reduce_sum(tf.cast(b[None, :] <= (edges[1:] + reach)[:, None], tf.int32), axis=1)
    return start, h, first, last


def _grid_window_needed(b, n, temperature):
    """The most thresholds any grid cell leaves unclamped (int32 scalar; ``b`` sorted)."""
    _, _, first, last = _grid(b, n, temperature)
    return tf.reduce_max(last - first)


def _grid_windows(n):
    """The grid kernels for ``n`` thresholds: ``GRID_WINDOW_SIZES`` below ``n``, then ``n``
    itself if that is no larger than the largest of them, else ``GRID_LOOP``."""
    sizes = tuple(size for size in GRID_WINDOW_SIZES if size < n)
    return sizes + ((n,) if n <= GRID_WINDOW_SIZES[-1] else (GRID_LOOP,))


def _grid_first(u, b, n, temperature, size):
    """Each element's window ``[f, f + size)``: the grid cell's first unclamped threshold,
    moved down where the window would pass the last one (int32, ``u``'s shape)."""
    start, h, first, _ = _grid(b, n, temperature)
    cells = GRID_CELLS_PER_THRESHOLD * n
    position = (u - start) / h
    position = tf.where(tf.math.is_nan(position), tf.zeros_like(position), position)
    cell = tf.cast(tf.clip_by_value(tf.math.floor(position), 0.0, float(cells - 1)), tf.int32)
    return tf.minimum(tf.gather(first, cell), n - size)


def _count_below_evenly_spaced(u, thresholds, n):
    """Number of thresholds ``b_i = b_0 + i g`` strictly below ``u`` (float, ``u``'s shape),
    without a table lookup: ``c = clip(ceil((u - b_0) / g), 0, n)``, then one comparison on
    each side (``b_{c-1} >= u``: one less; ``b_c < u``: one more), with ``b_i`` computed as
    :func:`_evenly_spaced` checked it, so the division's rounding cannot miscount. NaN counts 0.
    """
    b0 = thresholds[0]
    gap = (thresholds[n - 1] - b0) / float(n - 1)
    c = tf.clip_by_value(tf.math.ceil((u - b0) / gap), 0.0, float(n))
    c = tf.where(tf.math.is_nan(c), tf.zeros_like(c), c)
    c = tf.where((c > 0.0) & (b0 + (c - 1.0) * gap >= u), c - 1.0, c)
    return tf.where((c < float(n)) & (b0 + c * gap < u), c + 1.0, c)


def hard_staircase(x, alpha, beta, thresholds, levels):
    """Hard staircase ``alpha * (sum_i s_i [beta x > b_i] - o)`` = ``alpha * y_j``.

    ``j`` is the number of thresholds strictly below ``beta * x``; the output is
    exactly ``alpha`` times a level. ``+inf`` maps to the top level, ``-inf`` to
    the bottom one, and NaN to NaN. Equal steps and evenly spaced thresholds (as
    initialised) count ``j`` arithmetically (:func:`_count_below_evenly_spaced`); any other
    table by bisection (:func:`_count_below`).
    """
    return _hard_staircase(x, alpha, beta, thresholds, levels, None)


def _hard_staircase(x, alpha, beta, thresholds, levels, evenly_spaced):
    """:func:`hard_staircase` with the table's kind decided in the graph (``evenly_spaced``
    None: a conditional) or known beforehand (True: the arithmetic count only; False:
    bisection only). Without the conditional an XLA program compiles and runs faster
    (figures: docs/export.md, "Time")."""
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    alpha = _as_float(alpha, dtype)
    beta = _as_float(beta, dtype)
    n = levels.num_steps
    u = beta * x

    def by_bisection():
        b, _, prefix, _ = _sorted_table(thresholds, levels, dtype)
        return tf.gather(prefix, _count_below(u, b, n)) - float(levels.offset)

    if levels.is_uniform and n >= 2 and evenly_spaced is not False:
        table = _as_float(thresholds, dtype)
        step = float(levels.steps[0])

        def by_arithmetic():
            return _count_below_evenly_spaced(u, table, n) * step - float(levels.offset)

        codes = (by_arithmetic() if evenly_spaced
                 else tf.cond(_evenly_spaced(table, n), by_arithmetic, by_bisection))
    else:
        codes = by_bisection()
    y = alpha * codes
    return tf.where(tf.math.is_nan(x), x, y)


def soft_staircase_reference(x, alpha, beta, thresholds, temperature, levels):
    """The plain sum over all ``n`` thresholds, differentiated by TensorFlow.

    ``O(n)`` per element; used as the reference in tests and where a graph of
    elementwise builtins is needed (TFLite export).
    """
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    alpha = _as_float(alpha, dtype)
    beta = _as_float(beta, dtype)
    temperature = _as_float(temperature, dtype)
    b = _as_float(thresholds, dtype)
    u = beta * x
    total = tf.zeros_like(u)
    for i, s_i in enumerate(levels.steps):
        z = tf.clip_by_value(temperature * (u - b[i]), -CLAMP, CLAMP)
        total = total + float(s_i) * tf.sigmoid(z)
    return alpha * (total - float(levels.offset))


def _sigmoid_terms(diff, s_i, temperature, slope_temperature, need_codes, need_slope):
    """``s_i sigma_i`` (clamped, at T) and ``s_i d_i`` (at the slope temperature) of one threshold."""
    codes = slope = None
    z = temperature * diff
    sigma = tf.sigmoid(tf.clip_by_value(z, -CLAMP, CLAMP))
    if need_codes:
        codes = s_i * sigma
    if need_slope:
        if slope_temperature is not temperature:
            z = slope_temperature * diff
            sigma = tf.sigmoid(tf.clip_by_value(z, -CLAMP, CLAMP))
        slope = tf.where(tf.abs(z) <= CLAMP, s_i * sigma * (1.0 - sigma), tf.zeros_like(sigma))
    return codes, slope


def _plain_sums(u, thresholds, levels, temperature, slope_temperature, need_codes, need_slope):
    """Every threshold, unrolled; each ``b_i`` is a scalar (no per-element gather)."""
    codes = slope = tf.zeros_like(u)
    for i, s_i in enumerate(levels.steps):
        c, d = _sigmoid_terms(u - thresholds[i], float(s_i), temperature, slope_temperature,
                              need_codes, need_slope)
        codes = codes + c if need_codes else codes
        slope = slope + d if need_slope else slope
    return codes, slope


def _grid_sums(u, table, levels, temperature, slope_temperature, need_codes, need_slope, size):
    """Thresholds not evenly spaced, more than ``PLAIN_MAX`` of them: the ``size`` thresholds
    from each element's grid cell on (:func:`_grid_first`; no search, one table lookup),
    the clamped rest as prefix sums times ``sigmoid(+-10)``. ``size`` is static (one
    compiled kernel each) and at least :func:`_grid_window_needed`, so the result is the
    plain sum's; the cost is ``size`` sigmoids per element whatever ``n``. ``GRID_LOOP``:
    as many as needed, ``GRID_LOOP_CHUNK`` per loop iteration."""
    b, s, prefix, _ = table
    n = levels.num_steps
    if need_codes and need_slope and slope_temperature is not temperature:
        grid_temperature = tf.minimum(temperature, slope_temperature)   # the wider reach
    else:
        grid_temperature = temperature if need_codes else slope_temperature
    uniform_step = float(levels.steps[0]) if levels.is_uniform else None

    def add_term(index, codes, slope, valid=None):
        safe = index if valid is None else tf.minimum(index, n - 1)
        height = uniform_step if uniform_step is not None else tf.gather(s, safe)
        if valid is not None:
            height = tf.where(valid, height * tf.ones_like(u), tf.zeros_like(u))
        c, d = _sigmoid_terms(u - tf.gather(b, safe), height, temperature, slope_temperature,
                              need_codes, need_slope)
        return (codes + c if need_codes else codes), (slope + d if need_slope else slope)

    codes = slope = tf.zeros_like(u)
    if size == GRID_LOOP:
        first = _grid_first(u, b, n, grid_temperature, 0)
        needed = _grid_window_needed(b, n, grid_temperature)

        def body(k, codes, slope):
            for j in range(GRID_LOOP_CHUNK):
                index = first + k + j
                codes, slope = add_term(index, codes, slope, valid=index < n)
            return k + GRID_LOOP_CHUNK, codes, slope

        used, codes, slope = tf.while_loop(lambda k, *_: k < needed, body,
                                           (tf.constant(0), codes, slope))
        end = tf.minimum(first + used, n)
    else:
        first = _grid_first(u, b, n, grid_temperature, size)
        for k in range(size):
            codes, slope = add_term(first + k, codes, slope)
        end = first + size
    if need_codes:
        below = tf.gather(prefix, first)
        above = prefix[n] - tf.gather(prefix, end)
        codes = below * _SIG_HI + above * _SIG_LO + codes
    return codes, slope


def _evenly_spaced(thresholds, n):
    """True when the thresholds are exactly ``b_0 + i * g`` with ``g > 0`` (as initialised).

    Checked in the arithmetic the fast path uses, so that path reproduces every
    threshold bit for bit; anything else (trained, k-means, unsorted) is not.
    """
    b0 = thresholds[0]
    gap = (thresholds[n - 1] - b0) / float(n - 1)
    index = tf.range(n, dtype=thresholds.dtype)
    return tf.logical_and(gap > 0.0, tf.reduce_all(tf.equal(thresholds, b0 + index * gap)))


def _uniform_width(thresholds, n, temperature):
    """``W = floor(10 / (T g) - 1/2 + 1e-3) + 1``: how many places from the nearest
    threshold a threshold can be and still be within ``10 / T`` of ``beta * x``
    (0 for ``T g > ~20``, 1 down to ``T g = ~6.67``, 2 down to ~4, 3 down to ~2.86,
    5 at ``T g = 2`` (the smooth gradient's), 10 at ``T g = 1``).
    The ``1e-3`` margin covers the rounding of the nearest index half-way between two."""
    gap = (thresholds[n - 1] - thresholds[0]) / float(n - 1)
    width = tf.math.floor(CLAMP / (temperature * gap) - 0.5 + 1e-3) + 1.0
    width = tf.where(tf.math.is_nan(width), tf.constant(float(n), width.dtype), width)
    return tf.cast(tf.clip_by_value(width, 0.0, float(n)), tf.int32)


def _window_size(width, n):
    """Thresholds evaluated per element on the uniform path: ``min(2 W + 1, n)``."""
    return min(2 * width + 1, n)


def _uniform_sums(u, thresholds, levels, temperature, slope_temperature, need_codes, need_slope,
                  width):
    """Evenly spaced thresholds and equal steps: the nearest threshold is an arithmetic index.

    With ``c = round((u - b_0) / g)`` (clipped to ``[0, n-1]``), a threshold more than
    ``width`` places from ``c`` is more than ``(width + 1/2) g > 10 / T`` away (see
    :func:`_uniform_width`), so clamped. The ``m = min(2 width + 1, n)`` thresholds
    ``b_f .. b_{f+m-1}`` evaluated per element start at ``f = clip(c - width, 0, n - m)``:
    the window around ``c``, moved inward at the ends of the range, so that every one of
    them exists and none needs a validity mask. ``width`` is static (one compiled kernel
    per window size); the cost does not depend on ``n``.

    One exponential per element serves the whole window: with ``E_f = exp(-T (u - b_f))``
    and ``r = exp(T g)``, ``exp(-T (u - b_{f+k})) = E_f r^k``, and the clamped sigmoid is
    ``sigmoid(clip(z, -10, 10)) = 1 / (1 + clip(E, e^-10, e^10))``. ``E_f r^k`` stays within
    ``e^+-41`` wherever a term is not clamped (``W T g <= 10 + T g / 2``, ``T g <= 20`` for
    ``W >= 1``); 16-bit inputs are evaluated in float32. The slope term is
    ``s (1 - s)`` where ``|z_k| <= 10``, else 0, with ``z_k = T (u - b_f) - k T g`` (the
    reference's ``T (u - b_{f+k})`` up to float32 rounding: a subtraction per term instead
    of five operations). ``(u - b_0) / g`` is a product with ``1 / g`` (a division per
    element is slower; the window's margin covers the difference in rounding): together
    about a tenth off a forward and backward pass (2, 3 and 8 bits, interleaved timings).
    """
    n = levels.num_steps
    size = _window_size(width, n)
    dtype = u.dtype
    if dtype.size < 4:
        codes, slope = _uniform_sums(tf.cast(u, tf.float32), tf.cast(thresholds, tf.float32),
                                     levels, tf.cast(temperature, tf.float32),
                                     tf.cast(slope_temperature, tf.float32), need_codes,
                                     need_slope, width)
        return tf.cast(codes, dtype), tf.cast(slope, dtype)
    step = float(levels.steps[0])
    b0 = thresholds[0]
    gap = (thresholds[n - 1] - b0) / float(n - 1)
    # f = clip(round((u - b_0) / g) - width, 0, n - m): +-inf land on the ends, NaN stays
    # NaN (XLA's clamp propagates it) and so do the terms and the codes; its slope is 0.
    first = tf.clip_by_value(tf.math.floor((u - b0) * (1.0 / gap) + (0.5 - width)), 0.0,
                             float(n - size))
    b_first = b0 + first * gap
    offset = u - b_first

    def exponentials(t):
        """``[E_f r^k for k < m]``: ``exp(-t (u - b_{f+k}))`` from one exponential."""
        e_first = tf.exp(-t * offset)
        return [e_first * tf.exp(t * (float(k) * gap)) if k else e_first for k in range(size)]

    codes = slope = tf.zeros_like(u)     # what is not asked for (XLA drops it)
    if need_codes:
        e_lo = tf.constant(math.exp(-CLAMP), dtype)
        e_hi = tf.constant(math.exp(CLAMP), dtype)
        total = tf.add_n([1.0 / (1.0 + tf.clip_by_value(e, e_lo, e_hi))
                          for e in exponentials(temperature)])
        above = float(n - size) - first
        codes = step * (total + first * _SIG_HI + above * _SIG_LO)
    if need_slope:
        terms = []
        z_first = slope_temperature * offset
        z_step = slope_temperature * gap
        for k, e in enumerate(exponentials(slope_temperature)):
            z = z_first - float(k) * z_step if k else z_first
            sigma = 1.0 / (1.0 + e)
            terms.append(tf.where(tf.abs(z) <= CLAMP, sigma - sigma * sigma, tf.zeros_like(u)))
        slope = step * tf.add_n(terms)
    return codes, slope


def _uniform(levels):
    return levels.is_uniform and levels.num_steps >= UNIFORM_MIN


def _general_variants(n):
    """How many general kernels come first: one plain sum, or one per grid window size."""
    return 1 if n <= PLAIN_MAX else len(_grid_windows(n))


def _kernel_variants(levels, gradient, implementation):
    """Every kernel :func:`_kernel_branch` may pick, in its order: the general ones (the
    plain sum, or the grid path at each window size), then the uniform ones by width
    (:func:`_uniform_widths`)."""
    n = levels.num_steps
    if n <= PLAIN_MAX:
        variants = [_kernels(levels, gradient, implementation)]
    else:
        variants = [_kernels(levels, gradient, implementation, window=size)
                    for size in _grid_windows(n)]
    if _uniform(levels):
        variants += [_kernels(levels, gradient, implementation, width=width)
                     for width in _uniform_widths(n)]
    return variants


def _uniform_widths(n):
    """The uniform kernels' widths for ``n`` thresholds: ``UNIFORM_WIDTHS`` below ``n // 2``
    (from there on the window holds all ``n``), then ``n // 2``."""
    return tuple(w for w in UNIFORM_WIDTHS if w < n // 2) + (min(n // 2, UNIFORM_MAX_WIDTH),)


def _kernel_branch(thresholds, levels, temperature, evenly_spaced=None):
    """Which of :func:`_kernel_variants` evaluates ``levels`` at ``thresholds`` and
    ``temperature`` (int32 scalar).

    Evenly spaced thresholds of equal steps with ``W <= UNIFORM_MAX_WIDTH``
    (:func:`_uniform_width`): the uniform kernel of the smallest compiled width at least
    ``min(W, n // 2)``. Otherwise a
    general one: the plain sum for up to ``PLAIN_MAX`` thresholds, else the grid path with
    the smallest compiled window that covers :func:`_grid_window_needed`.
    ``evenly_spaced``: :func:`_evenly_spaced` of the thresholds if already computed.
    """
    n = levels.num_steps

    def general():
        if n <= PLAIN_MAX:
            return tf.constant(0)
        needed = _grid_window_needed(tf.sort(thresholds), n, temperature)
        sizes = tf.constant([size for size in _grid_windows(n) if size != GRID_LOOP])
        return tf.reduce_sum(tf.cast(sizes < needed, tf.int32))

    if not _uniform(levels):
        return general()
    if evenly_spaced is None:
        evenly_spaced = _evenly_spaced(thresholds, n)
    width = _uniform_width(thresholds, n, temperature)
    use = tf.logical_and(evenly_spaced, width <= UNIFORM_MAX_WIDTH)
    widths = tf.constant(_uniform_widths(n))
    smallest_wide_enough = tf.reduce_sum(tf.cast(widths < tf.minimum(width, n // 2), tf.int32))
    uniform_branch = _general_variants(n) + smallest_wide_enough
    if n <= PLAIN_MAX:
        return tf.where(use, uniform_branch, 0)
    # The grid's window (O(n^2) comparisons on the thresholds) only where it is used.
    return tf.cond(use, lambda: uniform_branch, general)


_BRANCH_CHOOSERS = {}


def _kernel_branches(thresholds, levels, gradient, temperature, implementation="xla"):
    """``(forward, backward)``: :func:`_kernel_branch` at ``T`` and at the gradient's
    temperature (:func:`_backward_temperatures`), sharing the evenly-spaced check.

    A function traced once per level set, gradient and dtype, for ``"xla"`` compiled on its
    own (its inputs have the same shapes at every call, so one small program serves every
    quantizer of the level set): one op in the caller's graph instead of about a hundred
    scalar ones, each of which Grappler and XLA's graph passes would visit again per
    quantizer before the first step runs.
    """
    key = (levels.levels, gradient, implementation, thresholds.dtype.name)
    if key not in _BRANCH_CHOOSERS:
        _BRANCH_CHOOSERS[key] = tf.function(
            lambda b, t: _choose_branches(b, levels, gradient, t), autograph=False,
            jit_compile=implementation == "xla",
            input_signature=[tf.TensorSpec(None, thresholds.dtype)] * 2)
    return _BRANCH_CHOOSERS[key](tf.stop_gradient(thresholds), tf.stop_gradient(temperature))


def _choose_branches(thresholds, levels, gradient, temperature):
    evenly_spaced = _evenly_spaced(thresholds, levels.num_steps) if _uniform(levels) else None
    forward = _kernel_branch(thresholds, levels, temperature, evenly_spaced)
    if gradient == "exact":
        backward = forward
    else:
        slope_temperature, _ = _backward_temperatures(gradient, temperature)
        backward = _kernel_branch(thresholds, levels, slope_temperature, evenly_spaced)
    return tf.reshape(forward, []), tf.reshape(backward, [])


def _sums(x, beta, thresholds, temperature, slope_temperature, levels, need_codes, need_slope,
          width=None, window=None):
    """``(sum_i s_i sigma_i - o, sum_i s_i d_i)``; ``width``: the uniform path's;
    ``window``: the grid path's; neither: the plain sum."""
    u = beta * x
    if width is not None:
        codes, slope = _uniform_sums(u, thresholds, levels, temperature, slope_temperature,
                                     need_codes, need_slope, width)
    elif window is not None:
        table = _sorted_table(thresholds, levels, x.dtype)
        codes, slope = _grid_sums(u, table, levels, temperature, slope_temperature,
                                  need_codes, need_slope, window)
    else:
        codes, slope = _plain_sums(u, thresholds, levels, temperature, slope_temperature,
                                   need_codes, need_slope)
    return codes - float(levels.offset), slope


def _threshold_gradient(x, upstream, beta, thresholds, slope_temperature, levels):
    """``sum over elements of upstream * s_i d_i`` for every threshold (original order)."""
    n = levels.num_steps
    u = beta * x
    if n <= PLAIN_MAX:
        parts = []
        for i, s_i in enumerate(levels.steps):
            _, d = _sigmoid_terms(u - thresholds[i], float(s_i), slope_temperature,
                                  slope_temperature, False, True)
            parts.append(tf.reduce_sum(upstream * d))
        return tf.stack(parts)
    b, s, _, order = _sorted_table(thresholds, levels, x.dtype)
    flat_u = tf.reshape(u, [-1])
    flat_w = tf.reshape(upstream, [-1])
    # Only the thresholds from each element's first unclamped one (the grid's) on, as many
    # as the densest cell leaves unclamped, can have a nonzero term.
    flat_first = _grid_first(flat_u, b, n, slope_temperature, 0)     # not moved down
    width = _grid_window_needed(b, n, slope_temperature)

    def body(k, acc):
        index = flat_first + k
        valid = index < n
        safe = tf.minimum(index, n - 1)
        _, d = _sigmoid_terms(flat_u - tf.gather(b, safe), tf.gather(s, safe),
                              slope_temperature, slope_temperature, False, True)
        acc += tf.math.unsorted_segment_sum(tf.where(valid, flat_w * d, tf.zeros_like(d)), safe, n)
        return k + 1, acc

    _, per_sorted = tf.while_loop(
        lambda k, _: k < width, body, (tf.constant(0), tf.zeros([n], x.dtype)),
        maximum_iterations=n)
    return tf.math.unsorted_segment_sum(per_sorted, order, n)


_THRESHOLD_GRADIENTS = {}


def _threshold_gradient_kernel(levels, implementation):
    """:func:`_threshold_gradient` for ``levels``, XLA-compiled on its own for ``"xla"``
    (its scatter into the ``n`` thresholds: measured about 15 times faster than TensorFlow's
    unsorted_segment_sum on the CPU)."""
    key = (levels.levels, implementation)
    if key not in _THRESHOLD_GRADIENTS:
        def gradient(x, upstream, beta, thresholds, slope_temperature):
            return _threshold_gradient(x, upstream, beta, thresholds, slope_temperature, levels)

        _THRESHOLD_GRADIENTS[key] = _compiled_alone(gradient, implementation)
    return _THRESHOLD_GRADIENTS[key]


def _compiled_alone(function, implementation):
    """``function`` XLA-compiled on its own for ``"xla"`` (else as it is), called on
    stop_gradient inputs: the custom gradient differentiates, and a recording tape must not
    ask TensorFlow for a gradient of the compiled function itself."""
    if implementation != "xla":
        return function
    # reduce_retracing: traced again for a new rank, not for every new shape (XLA still
    # compiles for each shape it runs on).
    compiled = tf.function(function, jit_compile=True, autograph=False, reduce_retracing=True)
    return lambda *args: compiled(*[tf.stop_gradient(a) for a in args])


class _Kernels:
    """The forward and backward elementwise passes of one level set, optionally XLA-compiled.

    ``forward(x, alpha, beta, b, T) = alpha * (sum_i s_i sigma_i - o)``;
    ``backward(x, upstream, alpha, beta, b, T, scale) = upstream * alpha * T * scale * sum_i s_i d_i``
    (``scale = beta`` gives ``dL/dx``).
    Each is one fused loop over the elements under XLA; the reductions for ``alpha`` and
    ``beta`` stay outside, so that XLA never evaluates the sigmoids twice.
    """

    def __init__(self, levels, gradient, compiled, width=None, window=None):
        self.levels = levels
        self.gradient = gradient
        self.width = width
        self.window = window
        wrap = tf.function(jit_compile=True, autograph=False) if compiled else (lambda f: f)
        # Called by _dispatcher only, on stop_gradient inputs of an open shape: traced once.
        self.forward = wrap(self._forward)
        self.backward = wrap(self._backward)

    def _forward(self, x, alpha, beta, thresholds, temperature):
        codes, _ = _sums(x, beta, thresholds, temperature, temperature, self.levels, True, False,
                         self.width, self.window)
        return alpha * codes

    def _backward(self, x, upstream, alpha, beta, thresholds, temperature, scale):
        slope_temperature, factor = _backward_temperatures(self.gradient, temperature)
        _, slope = _sums(x, beta, thresholds, temperature, slope_temperature, self.levels,
                         False, True, self.width, self.window)
        return upstream * (alpha * factor * scale) * slope


_KERNELS = {}
_HARD_KERNELS = {}
# hard_staircase_compiled's flat input sizes: a tensor up to the largest runs padded to the
# smallest that holds it.
HARD_BUCKETS = (1 << 12, 1 << 16, 1 << 20)
# run_padded_to_bucket's default sizes: powers of two, so that the padding at most doubles
# the work of a pass, up to 2^20 elements (4 MiB of float32).
ELEMENTWISE_BUCKETS = tuple(1 << k for k in range(10, 21))


def run_padded_to_bucket(function, x, buckets=ELEMENTWISE_BUCKETS):
    """``function(x)`` for an elementwise ``function`` (output shaped as its input), run on
    ``x`` flattened and zero-padded to the smallest of ``buckets`` that holds it.

    XLA compiles a kernel once per input shape, about 0.1 to 0.5 s each on a CPU, and the
    first training step of a network compiles one forward and one backward kernel for each
    distinct weight shape (MobileNetV2: 23 of them); padded to a few bucket sizes, they share
    the programs. ``x`` needs a static shape; a tensor without one, empty, or larger than
    the largest bucket runs as it is. Gradients flow through the pad and the slice: the
    padded elements get a zero upstream gradient, so they add nothing to any sum the
    backward pass computes (the scale gradients).

    Example::

        >>> import tensorflow as tf
        >>> y = run_padded_to_bucket(lambda v: 2.0 * v, tf.ones([3, 5]), buckets=(16, 64))
        >>> y.shape, float(tf.reduce_sum(y))
        (TensorShape([3, 5]), 30.0)
    """
    size = x.shape.num_elements()
    if not size or size > buckets[-1]:
        return function(x)
    bucket = next(b for b in buckets if b >= size)
    flat = tf.reshape(x, [-1])
    if bucket == size:
        return tf.reshape(function(flat), x.shape)
    padded = function(tf.pad(flat, [[0, bucket - size]]))
    return tf.reshape(padded[:size], x.shape)


def _hard_kernel(levels, implementation, evenly_spaced=None):
    """:func:`hard_staircase` for ``levels``, XLA-compiled on its own for ``"xla"``;
    ``evenly_spaced``: see :func:`_hard_staircase`."""
    key = (levels.levels, implementation, evenly_spaced)
    if key not in _HARD_KERNELS:
        def hard(x, alpha, beta, thresholds):
            return _hard_staircase(x, alpha, beta, thresholds, levels, evenly_spaced)

        _HARD_KERNELS[key] = _compiled_alone(hard, implementation)
    return _HARD_KERNELS[key]


def hard_staircase_kernel(levels, implementation="xla"):
    """:func:`hard_staircase` for ``levels`` as a function ``f(x, alpha, beta, thresholds)``:
    one XLA-compiled kernel for ``implementation="xla"`` (a single op in a graph, whatever
    the table), the plain ops for ``"graph"``. For training graphs (the quantization gap's
    hard values), not for graphs headed to TFLite.
    """
    return _hard_kernel(levels, implementation)


_EVENLY_SPACED_CHECKS = {}


def _is_evenly_spaced(thresholds, levels):
    """Whether the fast count applies to these (eager) thresholds: :func:`_evenly_spaced` in
    an XLA program of its own, the arithmetic of the compiled staircase (a Python bool)."""
    n = levels.num_steps
    if not (levels.is_uniform and n >= 2):
        return False
    if n not in _EVENLY_SPACED_CHECKS:
        _EVENLY_SPACED_CHECKS[n] = tf.function(lambda table: _evenly_spaced(table, n),
                                               jit_compile=True, autograph=False)
    return bool(_EVENLY_SPACED_CHECKS[n](thresholds))


def hard_staircase_compiled(x, alpha, beta, thresholds, levels, implementation="xla"):
    """:func:`hard_staircase` (the same values) as one XLA-compiled pass over ``x`` for
    ``implementation="xla"``: for eager calls, where each of the dozen elementwise ops of the
    plain form would be a pass of its own over the tensor (calibration's layer-by-layer
    walk through a network at 224x224). Not for graphs headed to TFLite (an XLA call is
    not a TFLite op); ``"graph"`` returns the plain form.

    Example::

        >>> import tensorflow as tf
        >>> from tf_qnets.core.levels import activation_levels
        >>> x = tf.constant([-1.0, 0.6, 2.0, 9.0])
        >>> hard_staircase_compiled(x, 1.0, 1.0, [0.5, 1.5, 2.5], activation_levels(2)).numpy()
        array([0., 1., 2., 3.], dtype=float32)
    """
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    args = (_as_float(alpha, dtype), _as_float(beta, dtype), _as_float(thresholds, dtype))
    if implementation != "xla" or not tf.executing_eagerly():
        return _hard_kernel(levels, implementation)(x, *args)
    # eager: the table's kind is known now, so the compiled program holds one count only
    kernel = _hard_kernel(levels, implementation, _is_evenly_spaced(args[2], levels))
    # XLA compiles once per input shape (~0.2 s each; a network's kernels and small
    # activations have dozens of shapes): up to HARD_BUCKETS[-1] elements, the flat tensor runs
    # padded to the smallest bucket that holds it, a handful of programs per level set. The
    # staircase is elementwise (scalar alpha, beta), so the padding changes no value. Larger
    # tensors run as they are: a copy in and out would cost more than their compilation.
    return run_padded_to_bucket(lambda values: kernel(values, *args), x, buckets=HARD_BUCKETS)


def _backward_temperatures(gradient, temperature):
    """``(T_slope, factor)``: ``d_i`` is evaluated at ``T_slope`` and the sum multiplied by
    ``factor``: exact ``(T, T)``, wide ``(1, T)``, smooth ``(T_g, T_g)``, ``T_g = min(T, 2)``."""
    if gradient == "wide":
        return tf.ones_like(temperature), temperature
    if gradient == "smooth":
        smooth = tf.minimum(temperature, tf.constant(SMOOTH_TEMPERATURE, temperature.dtype))
        return smooth, smooth
    return temperature, temperature


def _kernels(levels, gradient, implementation, width=None, window=None):
    key = (levels.levels, gradient, implementation, width, window)
    if key not in _KERNELS:
        _KERNELS[key] = _Kernels(levels, gradient, compiled=implementation == "xla", width=width,
                                 window=window)
    return _KERNELS[key]


def _traced_once(body, dtype, branches, tensors):
    """``body(*branch_indices, *tensors)`` as a function traced once: ``branches`` int32
    scalars, then ``tensors`` tensors of ``dtype`` and any shape. Called on stop_gradient
    tensors (the custom gradient differentiates: a recording tape must not ask TensorFlow
    for a gradient of a compiled kernel, nor keep its inputs); the (first) output keeps the
    first tensor's static shape."""
    traced = tf.function(
        body, autograph=False,
        input_signature=[tf.TensorSpec([], tf.int32)] * branches
        + [tf.TensorSpec(None, dtype)] * tensors)

    def call(*args):
        outputs = traced(*args[:branches], *[tf.stop_gradient(a) for a in args[branches:]])
        first = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        first.set_shape(args[branches].shape)
        return outputs

    return call


_DISPATCHERS = {}


def _dispatcher(levels, gradient, implementation, method, dtype, hard_forward_from=None):
    """One pass (``method``: ``"forward"`` or ``"backward"``) of :func:`soft_staircase` for
    ``levels`` and ``dtype`` as a function traced once for every input shape: called as
    ``pass(branch, *args)``, it runs kernel ``branch`` of :func:`_kernel_variants` (the
    caller picks it with :func:`_kernel_branches`); the forward with ``hard_forward_from``
    runs the hard staircase from that temperature on.

    Each call adds one function call op to the caller's graph (Grappler inlines its few
    ops when the graph runs). Built at every call instead, the ``tf.switch_case`` over
    every variant (each branch its own function graph) and the kernels themselves (traced
    again for every input shape) were most of the first training step's time on a
    ``keras.applications`` network (figures: docs/train.md). Inputs and output: see
    :func:`_traced_once`.
    """
    dtype = tf.as_dtype(dtype)
    key = (levels.levels, gradient, implementation, method, dtype.name, hard_forward_from)
    if key not in _DISPATCHERS:
        variants = _kernel_variants(levels, gradient, implementation)

        def run(branch, args):
            if len(variants) == 1:
                return getattr(variants[0], method)(*args)
            return tf.switch_case(
                branch, [lambda k=k: getattr(k, method)(*args) for k in variants])

        if method == "forward":
            def body(branch, x, alpha, beta, thresholds, temperature):
                def soft():
                    return run(branch, (x, alpha, beta, thresholds, temperature))

                if hard_forward_from is None:
                    return soft()
                # The hard branch is one compiled kernel, as the soft one is: written as
                # plain TensorFlow ops inside the conditional, it more than doubled the peak
                # memory of training without jit_compile (tests/test_staircase_memory.py).
                return tf.cond(
                    temperature >= tf.constant(hard_forward_from, dtype),
                    lambda: _hard_kernel(levels, implementation)(x, alpha, beta, thresholds),
                    soft)
        else:
            def body(branch, x, upstream, alpha, beta, thresholds, temperature, scale):
                return run(branch, (x, upstream, alpha, beta, thresholds, temperature, scale))

        _DISPATCHERS[key] = _traced_once(body, dtype, branches=1,
                                         tensors=5 if method == "forward" else 7)
    return _DISPATCHERS[key]


_GRADIENT_PASSES = {}


def _gradient_pass(levels, gradient, implementation, dtype, hard_forward_from):
    """``f(branch, backward_branch, x, y, upstream, alpha, beta, thresholds, T)`` ->
    ``(dL/dx, dL/dalpha, dL/dbeta)`` of :func:`soft_staircase`, a function traced once per
    level set, gradient, dtype and ``hard_forward_from`` (one call op per quantizer; its two
    conditionals, built at every call, were most of the time spent tracing a quantizer's
    gradient).

    ``dL/dx`` is the backward kernel at ``scale = beta``; the scale gradients are sums of
    products, one pass each as a dot product: ``dL/dbeta = sum(x * dL/dx) / beta``, unless
    ``beta = 0`` or an infinite ``x`` (whose gradient is 0) makes it NaN, then recomputed
    without the division (``0 * inf = 0``); ``dL/dalpha = sum(upstream * y) / alpha``, or for
    ``alpha = 0`` the forward pass at ``alpha = 1``.
    """
    dtype = tf.as_dtype(dtype)
    key = (levels.levels, gradient, implementation, dtype.name, hard_forward_from)
    if key not in _GRADIENT_PASSES:
        forward = _dispatcher(levels, gradient, implementation, "forward", dtype,
                              hard_forward_from)
        backward_pass = _dispatcher(levels, gradient, implementation, "backward", dtype)

        def body(branch, backward_branch, x, y, upstream, alpha, beta, thresholds, temperature):
            def backward(scale):
                return backward_pass(backward_branch, x, upstream, alpha, beta, thresholds,
                                     temperature, scale)

            d_x = backward(beta)
            d_beta = _dot(x, d_x) / beta
            d_beta = tf.cond(
                tf.math.is_finite(d_beta), lambda: d_beta,
                lambda: tf.reduce_sum(tf.math.multiply_no_nan(x, backward(tf.ones_like(beta)))))
            d_alpha = tf.cond(
                tf.not_equal(alpha, 0.0),
                lambda: _dot(upstream, y) / alpha,
                lambda: _dot(upstream, forward(branch, x, tf.ones_like(alpha), beta, thresholds,
                                               temperature)))
            return d_x, d_alpha, d_beta

        _GRADIENT_PASSES[key] = _traced_once(body, dtype, branches=2, tensors=7)
    return _GRADIENT_PASSES[key]


def _dot(a, b):
    """``sum(a * b)`` over all elements (two elementwise-fused passes; measured faster on
    the CPU than a [1, N] x [N, 1] matrix product, docs/benchmarks.md)."""
    return tf.reduce_sum(a * b)


def soft_staircase(x, alpha, beta, thresholds, temperature, levels, gradient="exact",
                   train_thresholds=False, implementation="xla", hard_forward_from=None):
    """Soft staircase (see the module docstring): a few sigmoids per element, not ``n``.

    Args:
      x: input tensor (any shape, float).
      alpha, beta: output and input scales (scalars).
      thresholds: ``[n]`` thresholds in the beta-scaled domain (any order).
      temperature: ``T > 0`` (scalar).
      levels: a :class:`tf_qnets.core.levels.LevelSet`.
      gradient: ``"exact"``, ``"wide"`` (derivative at T = 1, times T; the
        authors' choice for binary weights) or ``"smooth"`` (the derivative at
        ``min(T, 2)``; see the module docstring).
      train_thresholds: compute the gradient for ``thresholds`` (frozen by
        default, as in the paper; a zero gradient is returned otherwise).
      implementation: ``"xla"`` (default: the elementwise passes are compiled with
        XLA on their own, so the rest of the model keeps its regular kernels; also
        fine inside a ``jit_compile=True`` model) or ``"graph"`` (plain TensorFlow
        ops, for platforms without XLA).
      hard_forward_from: None (default), or a temperature from which on the forward
        value is the hard staircase itself (:func:`hard_staircase`) while the backward
        stays the soft form's gradient above (a straight-through estimator). Training
        then computes exactly the network that is evaluated and deployed.

    Returns ``alpha * (sum_i s_i sigmoid(clip(T (beta x - b_i))) - o)``, equal to
    :func:`soft_staircase_reference` within float32 rounding. The backward pass keeps
    ``x`` and the output ``y`` (which the next layer keeps anyway) and recomputes the
    sigmoids; ``dy/dalpha = sum(upstream * y) / alpha`` and ``dy/dbeta = sum(x * dy/dx) / beta``
    are sums of products (recomputed without the division when that is 0 or not finite).

    Example::

        >>> from tf_qnets.core.levels import activation_levels
        >>> y = soft_staircase(tf.constant([0.2, 1.4]), 1.0, 1.0, [0.5, 1.5, 2.5], 50.0,
        ...                    activation_levels(2))
        >>> [round(float(v), 4) for v in y]
        [0.0001, 1.0067]
    """
    if gradient not in GRADIENTS:
        raise ValueError(f"`gradient` must be one of {GRADIENTS}, got {gradient!r}.")
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"`implementation` must be one of {IMPLEMENTATIONS}, got {implementation!r}.")
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(f"`x` must be a float tensor, got dtype {x.dtype.name}.")
    dtype = x.dtype
    n = levels.num_steps
    forward = _dispatcher(levels, gradient, implementation, "forward", dtype, hard_forward_from)
    input_and_scale_gradients = _gradient_pass(levels, gradient, implementation, dtype,
                                               hard_forward_from)
    several = len(_kernel_variants(levels, gradient, implementation)) > 1

    @tf.custom_gradient
    def _soft(x, alpha, beta, thresholds, temperature):
        # The kernel choice: once per call, shared by the forward, the backward and the
        # fallbacks of the scale gradients (_gradient_pass).
        if several:
            branch, backward_branch = _kernel_branches(thresholds, levels, gradient, temperature,
                                                       implementation)
        else:
            branch = backward_branch = tf.constant(0)
        y = forward(branch, x, alpha, beta, thresholds, temperature)

        def grad(upstream):
            # Recomputed from x: nothing of x's size is kept from the forward pass but y.
            d_x, d_alpha, d_beta = input_and_scale_gradients(
                branch, backward_branch, x, y, upstream, alpha, beta, thresholds, temperature)
            if train_thresholds:
                slope_temperature, factor = _backward_temperatures(gradient, temperature)
                d_b = -alpha * factor * _threshold_gradient_kernel(levels, implementation)(
                    x, upstream, beta, thresholds, slope_temperature)
            else:
                d_b = tf.zeros([n], dtype)
            return (d_x, tf.reshape(d_alpha, tf.shape(alpha)), tf.reshape(d_beta, tf.shape(beta)),
                    tf.reshape(d_b, tf.shape(thresholds)), tf.zeros_like(temperature))

        return y, grad

    return _soft(
        x,
        _as_float(alpha, dtype),
        _as_float(beta, dtype),
        _as_float(thresholds, dtype),
        _as_float(temperature, dtype),
    )

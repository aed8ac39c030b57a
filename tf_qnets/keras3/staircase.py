"""The staircase of Quantization Networks in ``keras.ops``: one code path for every Keras 3 backend.

Notation (Yang et al., "Quantization Networks", CVPR 2019, Sec. 3; docs in
/shared/method.md): levels ``y_0 < ... < y_n``, step heights ``s_i = y_i - y_{i-1}``,
offset ``o = -y_0``, thresholds ``b_1 .. b_n`` in the beta-scaled domain, input scale
``beta``, output scale ``alpha``, temperature ``T``.

Hard (inference) form, strict ``>``::

    y = alpha * ( sum_i s_i * [beta * x > b_i] - o )                  = alpha * level

Soft (training) form, with the authors' clamp of the sigmoid argument::

    y = alpha * ( sum_i s_i * sigmoid(clip(T * (beta * x - b_i), -10, 10)) - o )

Gradients of the soft form, written by hand with ``keras.ops.custom_gradient``
(``d_i = sigma_i (1 - sigma_i)`` at the slope temperature ``T_s`` where
``|T_s (beta x - b_i)| <= 10``, else 0; ``F`` the factor)::

    dy/dx     = alpha * beta * F * sum_i s_i d_i
    dy/dbeta  = alpha * x    * F * sum_i s_i d_i
    dy/db_i   = -alpha * F * s_i d_i                  (only with train_thresholds=True)
    dy/dalpha = sum_i s_i sigma_i - o                 (the forward's codes)
    dy/dT     = 0

``gradient`` picks ``(T_s, F)``: ``"exact"`` ``(T, T)`` (the soft form's derivative),
``"wide"`` ``(1, T)`` (the authors' backward for binary weights: a wider window),
``"smooth"`` ``(min(T, 2), min(T, 2))`` (the derivative at a low temperature: every
input within the staircase's range gets a gradient, not only those at a threshold).

Cost. The clamp makes every threshold farther than ``10 / T`` from ``u = beta x``
contribute the constant ``s_i sigmoid(+-10)`` and no gradient. For evenly spaced
thresholds ``b_i = b_0 + i g`` with equal steps and ``n >= UNIFORM_MIN`` (8 under JAX:
4-bit sets and up; 3 under TensorFlow; how activation thresholds are initialised, checked
on every call), the nearest threshold is
``round((u - b_0) / g)`` and only the ``min(2 W + 1, n)`` thresholds around it are
evaluated, ``W = floor(10 / (T g) - 1/2) + 1`` (0 once ``T g > 20``), from a few
compiled window sizes (``UNIFORM_WIDTHS``): the cost does not grow with ``n``. Any
other table is the plain sum over its ``n`` thresholds. The hard form counts the
thresholds below ``u`` by arithmetic in the evenly spaced case, else with comparisons
(up to ``PLAIN_MAX`` thresholds) or a binary search.

Non-finite inputs: NaN gives NaN in both forms; ``+inf``/``-inf`` give the top/bottom
of the staircase; their gradients are 0 and keep the scales' gradients finite.

Example::

    >>> from keras import ops
    >>> from tf_qnets.core.levels import weight_levels
    >>> from tf_qnets.keras3.staircase import hard_staircase
    >>> y = hard_staircase(ops.convert_to_tensor([-0.3, 0.01, 0.2]), 0.5, 1.0,
    ...                    ops.convert_to_tensor([-0.05, 0.05]), weight_levels(2))
    >>> ops.convert_to_numpy(y).tolist()
    [-0.5, 0.0, 0.5]
"""

import math

import keras
from keras import ops

from tf_qnets.core.staircase import CLAMP, GRADIENTS, SMOOTH_TEMPERATURE

__all__ = [
    "CLAMP",
    "GRADIENTS",
    "SMOOTH_TEMPERATURE",
    "hard_staircase",
    "soft_staircase",
    "slope_temperatures",
]

# Tables of at most this many thresholds use the plain sum of comparisons in the hard form.
PLAIN_MAX = 15
# Evenly spaced thresholds of equal steps from this many on use the windowed soft form ...
# Under JAX from 8 (4-bit sets and up): below, the window saves at most a few sigmoids per
# element, and every window size is one more branch that jit compiles (a 3-bit activation
# quantizer's four branches about doubled the XLA compile time of a small model's training
# step). Under TensorFlow from 3, as the Keras 2 path: there the path without the window
# made a W3A3 training batch (jit_compile) about twice the float one
# (benchmarks/keras3_train_speed.py, docs/benchmarks.md). The backend is fixed per process.
UNIFORM_MIN = 3 if keras.backend.backend() == "tensorflow" else 8
# ... with one of these window half-widths (the smallest that covers W); above the largest,
# the plain sum.
UNIFORM_WIDTHS = (0, 1, 3, 5, 10)
# Margin of the window width against the rounding of the nearest index half-way between two.
_WIDTH_MARGIN = 1e-3
_SIG_HI = 1.0 / (1.0 + math.exp(-CLAMP))
_SIG_LO = 1.0 / (1.0 + math.exp(CLAMP))


def slope_temperatures(gradient, temperature):
    """``(T_s, F)`` of a ``gradient`` option: the temperature the sigmoid derivative is
    evaluated at, and the factor it is multiplied by (see the module docstring)."""
    if gradient == "wide":
        return ops.ones_like(temperature), temperature
    if gradient == "smooth":
        smooth = ops.minimum(temperature, SMOOTH_TEMPERATURE)
        return smooth, smooth
    return temperature, temperature


def _slope_term(z):
    """``sigma (1 - sigma)`` of ``z`` where ``|z| <= 10`` (the clamp's flat parts: 0)."""
    sigma = ops.sigmoid(z)
    return ops.where(ops.abs(z) <= CLAMP, sigma * (1.0 - sigma), ops.zeros_like(z))


def _threshold_sum(u, thresholds, levels, term):
    """``sum_i s_i term(u - b_i)``: unrolled for up to ``PLAIN_MAX`` thresholds (scalar
    ``b_i``), a loop above (compiled once, whatever ``n``)."""
    n = levels.num_steps
    if n <= PLAIN_MAX:
        total = ops.zeros_like(u)
        for i, step in enumerate(levels.steps):
            total = total + float(step) * term(u - thresholds[i])
        return total
    steps = ops.convert_to_tensor(levels.steps, dtype=u.dtype)

    def body(i, total):
        return total + ops.take(steps, i) * term(u - ops.take(thresholds, i))

    return ops.fori_loop(0, n, body, ops.zeros_like(u))


def _plain_codes(u, thresholds, levels, temperature):
    """``sum_i s_i sigmoid(clip(T (u - b_i)))`` over every threshold."""
    return _threshold_sum(
        u, thresholds, levels, lambda d: ops.sigmoid(ops.clip(temperature * d, -CLAMP, CLAMP)))


def _plain_slope(u, thresholds, levels, slope_temperature):
    """``sum_i s_i d_i`` at ``T_s`` over every threshold."""
    return _threshold_sum(u, thresholds, levels, lambda d: _slope_term(slope_temperature * d))


def _threshold_gradient(u, weight, thresholds, levels, slope_temperature):
    """``[sum(weight * s_i d_i) for each threshold]`` (the thresholds' order): a loop over
    the ``n`` thresholds, each a sum over every element."""
    n = levels.num_steps
    steps = ops.convert_to_tensor(levels.steps, dtype=u.dtype)

    def body(i, total):
        d = ops.take(steps, i) * _slope_term(slope_temperature * (u - ops.take(thresholds, i)))
        return total + ops.one_hot(i, n, dtype=u.dtype) * ops.sum(weight * d)

    return ops.fori_loop(0, n, body, ops.zeros((n,), u.dtype))


def _spacing(thresholds, n):
    """``(b_0, g)``: the first threshold and the mean gap ``(b_{n-1} - b_0) / (n - 1)``."""
    first = thresholds[0]
    return first, (thresholds[n - 1] - first) / float(n - 1)


def _evenly_spaced(thresholds, n):
    """True (a boolean scalar) when ``b_i == b_0 + i g`` exactly, ``g > 0``: the arithmetic
    the windowed form uses reproduces every threshold."""
    first, gap = _spacing(thresholds, n)
    index = ops.cast(ops.arange(n), thresholds.dtype)
    return ops.logical_and(gap > 0.0, ops.all(ops.equal(thresholds, first + index * gap)))


def _window_widths(n):
    """The compiled half-widths for ``n`` thresholds: ``UNIFORM_WIDTHS`` below ``n // 2``,
    then ``n // 2`` (whose window holds all ``n``) if that is smaller than the largest."""
    half = n // 2
    return tuple(w for w in UNIFORM_WIDTHS if w < half) + (min(half, UNIFORM_WIDTHS[-1]),)


def _window_codes(u, thresholds, levels, temperature, width):
    """The soft codes from the ``m = min(2 width + 1, n)`` thresholds around the nearest one.

    ``f = clip(floor((u - b_0) / g + 1/2 - width), 0, n - m)``: the window starts ``width``
    places below the nearest threshold, moved inward at the ends of the range. Thresholds
    below it are clamped high (``sigmoid(10)`` each), those above it clamped low.
    """
    n = levels.num_steps
    size = min(2 * width + 1, n)
    first_b, gap = _spacing(thresholds, n)
    first = ops.clip(ops.floor((u - first_b) / gap + (0.5 - width)), 0.0, float(n - size))
    total = ops.zeros_like(u)
    for k in range(size):
        z = ops.clip(temperature * (u - (first_b + (first + float(k)) * gap)), -CLAMP, CLAMP)
        total = total + ops.sigmoid(z)
    above = float(n - size) - first
    return float(levels.steps[0]) * (total + first * _SIG_HI + above * _SIG_LO)


def _window_slope(u, thresholds, levels, slope_temperature, width):
    """``sum_i s_i d_i`` at ``T_s`` from the window around the nearest threshold (the
    thresholds outside it are clamped: no slope)."""
    n = levels.num_steps
    size = min(2 * width + 1, n)
    first_b, gap = _spacing(thresholds, n)
    first = ops.clip(ops.floor((u - first_b) / gap + (0.5 - width)), 0.0, float(n - size))
    total = ops.zeros_like(u)
    for k in range(size):
        total = total + _slope_term(slope_temperature * (u - (first_b + (first + float(k)) * gap)))
    return float(levels.steps[0]) * total


def _concrete(value):
    """The Python value of a scalar tensor when it has one (eager execution), else None.

    Inside a traced or compiled function (a JAX tracer, a TensorFlow graph tensor) the value
    is unknown and the choice stays in the graph (``ops.cond``/``ops.switch``). Eagerly the
    choice is made here: JAX would otherwise compile a new conditional for every eager call
    (its branches close over new arrays each time), which made calibrating a model with
    8-bit activations take minutes."""
    try:
        return ops.convert_to_numpy(value).item()
    except Exception:   # noqa: BLE001  (a tracer or a symbolic tensor: no value to read)
        return None


def _cond(predicate, true_fn, false_fn):
    """``ops.cond``, decided in Python when ``predicate`` is concrete (see :func:`_concrete`)."""
    value = _concrete(predicate)
    if value is None:
        return ops.cond(predicate, true_fn, false_fn)
    return true_fn() if value else false_fn()


def _switch(index, branches, *operands):
    """``ops.switch``, decided in Python when ``index`` is concrete (see :func:`_concrete`)."""
    value = _concrete(index)
    if value is None:
        return ops.switch(index, branches, *operands)
    return branches[int(value)](*operands)


def _uses_window(levels):
    return levels.is_uniform and levels.num_steps >= UNIFORM_MIN


def _branch(thresholds, levels, temperature):
    """Index into ``[plain sum] + windows of _window_widths(n)``: the smallest window wide
    enough for ``W = floor(10 / (T g) - 1/2) + 1``, or 0 (the plain sum) where the
    thresholds are not evenly spaced or ``W`` exceeds every window."""
    n = levels.num_steps
    _, gap = _spacing(thresholds, n)
    ratio = CLAMP / (temperature * gap) - 0.5 + _WIDTH_MARGIN
    ratio = ops.where(ops.isfinite(ratio), ratio, float(n))
    width = ops.clip(ops.floor(ratio) + 1.0, 0.0, float(n))
    widths = _window_widths(n)
    covered = ops.minimum(width, float(n // 2))
    index = 1 + sum(ops.cast(covered > float(w), "int32") for w in widths)
    use = ops.logical_and(_evenly_spaced(thresholds, n), width <= float(widths[-1]))
    use = ops.logical_and(use, index <= len(widths))
    return ops.where(use, index, 0)


def _soft_codes(u, thresholds, levels, temperature):
    """``sum_i s_i sigmoid(clip(T (u - b_i)))``, windowed where the thresholds allow it."""
    if not _uses_window(levels):
        return _plain_codes(u, thresholds, levels, temperature)
    branches = [lambda u, b, t: _plain_codes(u, b, levels, t)]
    branches += [lambda u, b, t, w=w: _window_codes(u, b, levels, t, w)
                 for w in _window_widths(levels.num_steps)]
    return _switch(_branch(thresholds, levels, temperature), branches, u, thresholds, temperature)


def _soft_slope(u, thresholds, levels, slope_temperature):
    """``sum_i s_i d_i`` at ``T_s``, windowed where the thresholds allow it."""
    if not _uses_window(levels):
        return _plain_slope(u, thresholds, levels, slope_temperature)
    branches = [lambda u, b, t: _plain_slope(u, b, levels, t)]
    branches += [lambda u, b, t, w=w: _window_slope(u, b, levels, t, w)
                 for w in _window_widths(levels.num_steps)]
    return _switch(_branch(thresholds, levels, slope_temperature), branches, u, thresholds,
                   slope_temperature)


def _count_below_evenly_spaced(u, thresholds, n):
    """Number of thresholds ``b_i ~ b_0 + i g`` strictly below ``u``: the estimate
    ``c = clip(ceil((u - b_0) / g), 0, n)``, then one comparison on each side with the stored
    thresholds (``b_{c-1} >= u``: one less; ``b_c < u``: one more). Exact whenever the
    estimate is off by at most one, whatever the rounding of the arithmetic (compilers
    may fuse ``b_0 + c g`` into one rounding, or not). NaN counts 0."""
    first, gap = _spacing(thresholds, n)
    c = ops.clip(ops.ceil((u - first) / gap), 0.0, float(n))
    c = ops.where(ops.isnan(c), ops.zeros_like(c), c)

    def threshold(index):
        return ops.take(thresholds, ops.cast(ops.clip(index, 0.0, float(n - 1)), "int32"))

    c = ops.where(ops.logical_and(c > 0.0, threshold(c - 1.0) >= u), c - 1.0, c)
    return ops.where(ops.logical_and(c < float(n), threshold(c) < u), c + 1.0, c)


def _table_codes(u, thresholds, levels):
    """``sum_i s_i [u > b_i]`` for any table: comparisons for a few thresholds, else a binary
    search on the sorted table (``u``'s position counts the thresholds strictly below it)."""
    n = levels.num_steps
    if n <= PLAIN_MAX:
        total = ops.zeros_like(u)
        for i, step in enumerate(levels.steps):
            total = total + float(step) * ops.cast(ops.greater(u, thresholds[i]), u.dtype)
        return total
    order = ops.argsort(thresholds)
    table = ops.take(thresholds, order)
    steps = ops.take(ops.convert_to_tensor(levels.steps, dtype=u.dtype), order)
    prefix = ops.concatenate([ops.zeros((1,), u.dtype), ops.cumsum(steps)])
    flat = ops.reshape(u, (-1,))
    safe = ops.where(ops.isnan(flat), ops.zeros_like(flat), flat)
    below = ops.searchsorted(table, safe, side="left")
    return ops.reshape(ops.take(prefix, below), ops.shape(u))


def _hard_codes(u, thresholds, levels):
    """``sum_i s_i [u > b_i]``: by arithmetic for evenly spaced thresholds of equal steps
    (``n >= UNIFORM_MIN``, checked on every call), else from the table."""
    if not _uses_window(levels):
        return _table_codes(u, thresholds, levels)
    n = levels.num_steps
    step = float(levels.steps[0])
    return _cond(_evenly_spaced(thresholds, n),
                 lambda: step * _count_below_evenly_spaced(u, thresholds, n),
                 lambda: _table_codes(u, thresholds, levels))


def _read(value):
    """``value`` as a tensor. A TensorFlow variable counts as a tensor to Keras's conversion;
    read it here, so that ``custom_gradient`` sees a tensor and not a variable it would
    demand a ``variables`` gradient for."""
    value = ops.convert_to_tensor(value)
    return ops.copy(value) if hasattr(value, "assign") else value


def _as_float(value, dtype):
    return ops.cast(_read(value), dtype)


def _check(levels, gradient, x):
    if gradient not in GRADIENTS:
        raise ValueError(f"`gradient` must be one of {GRADIENTS}, got {gradient!r}.")
    if not hasattr(levels, "steps"):
        raise TypeError(
            f"`levels` must be a tf_qnets.core.levels.LevelSet, got {type(levels).__name__}; "
            "build one with LevelSet((-1, 0, 1)) or weight_levels(bits).")
    dtype = keras.backend.standardize_dtype(x.dtype)
    if "float" not in dtype:
        raise TypeError(f"`x` must be a float tensor, got dtype {dtype}.")


def hard_staircase(x, alpha, beta, thresholds, levels):
    """Hard staircase ``alpha * (sum_i s_i [beta x > b_i] - o)``: exactly ``alpha`` times a level.

    Args:
      x: float tensor (any shape).
      alpha, beta: output and input scales (scalars).
      thresholds: ``[n]`` thresholds in the beta-scaled domain (any order).
      levels: a :class:`tf_qnets.core.levels.LevelSet`.

    ``+inf`` maps to the top level, ``-inf`` to the bottom one, NaN to NaN.
    """
    x = ops.convert_to_tensor(x)
    _check(levels, "exact", x)
    dtype = x.dtype
    u = _as_float(beta, dtype) * x
    codes = _hard_codes(u, _as_float(thresholds, dtype), levels) - float(levels.offset)
    return ops.where(ops.isnan(x), x, _as_float(alpha, dtype) * codes)


def soft_staircase(x, alpha, beta, thresholds, temperature, levels, gradient="exact",
                   train_thresholds=False, hard_forward_from=None):
    """Soft staircase ``alpha * (sum_i s_i sigmoid(clip(T (beta x - b_i), -10, 10)) - o)``.

    Args:
      x: float tensor (any shape).
      alpha, beta: output and input scales (scalars).
      thresholds: ``[n]`` thresholds in the beta-scaled domain (any order).
      temperature: ``T > 0`` (scalar).
      levels: a :class:`tf_qnets.core.levels.LevelSet`.
      gradient: ``"exact"``, ``"wide"`` or ``"smooth"`` (see the module docstring).
      train_thresholds: return the thresholds' gradient (``O(n)`` per element); a zero
        gradient otherwise (the paper freezes them).
      hard_forward_from: None, or a temperature from which on the forward value is
        :func:`hard_staircase` while the backward stays the soft form's (a
        straight-through estimator): training then computes the evaluated network.

    Returns a tensor of ``x``'s shape and dtype, with the gradients of the module docstring.

    Example::

        >>> from keras import ops
        >>> from tf_qnets.core.levels import activation_levels
        >>> y = soft_staircase(ops.convert_to_tensor([0.2, 1.4]), 1.0, 1.0,
        ...                    ops.convert_to_tensor([0.5, 1.5, 2.5]), 50.0, activation_levels(2))
        >>> [round(float(v), 4) for v in ops.convert_to_numpy(y)]
        [0.0001, 1.0067]
    """
    x = _read(x)
    _check(levels, gradient, x)
    dtype = x.dtype
    offset = float(levels.offset)
    n = levels.num_steps

    def forward(x, alpha, beta, thresholds, temperature):
        """The codes ``sum_i s_i sigma_i - o`` (soft, or hard from ``hard_forward_from``)."""
        u = beta * x

        def soft():
            return _soft_codes(u, thresholds, levels, temperature) - offset

        if hard_forward_from is None:
            return soft()
        return _cond(temperature >= hard_forward_from,
                     lambda: _hard_codes(u, thresholds, levels) - offset, soft)

    @ops.custom_gradient
    def staircase(x, alpha, beta, thresholds, temperature):
        codes = forward(x, alpha, beta, thresholds, temperature)
        y = ops.where(ops.isnan(x), x, alpha * codes)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            slope_temperature, factor = slope_temperatures(gradient, temperature)
            u = beta * x
            slope = _soft_slope(u, thresholds, levels, slope_temperature)
            scaled = upstream * (alpha * factor) * slope
            d_x = scaled * beta
            # Infinite and NaN inputs have slope 0: count them as 0 so that 0 * inf is 0.
            finite_x = ops.where(ops.isfinite(x), x, ops.zeros_like(x))
            d_beta = ops.sum(scaled * finite_x)
            finite_codes = ops.where(ops.isnan(codes), ops.zeros_like(codes), codes)
            d_alpha = ops.sum(upstream * finite_codes)
            if train_thresholds:
                d_b = -_threshold_gradient(u, upstream * (alpha * factor), thresholds, levels,
                                           slope_temperature)
            else:
                d_b = ops.zeros((n,), dtype)
            return (d_x, ops.reshape(d_alpha, ops.shape(alpha)),
                    ops.reshape(d_beta, ops.shape(beta)), ops.reshape(d_b, ops.shape(thresholds)),
                    ops.zeros_like(temperature))

        return y, grad

    return staircase(x, _as_float(alpha, dtype), _as_float(beta, dtype),
                     _as_float(thresholds, dtype), _as_float(temperature, dtype))

"""The staircase of Quantization Networks: pure TensorFlow math, no Keras.

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

Cost. The clamp makes every threshold farther than ``10 / T`` from ``beta * x``
contribute the constant ``s_i * sigmoid(+-10)`` and no gradient. With sorted
thresholds and smallest gap ``g``, only the ``K = floor(10 / (T g)) + 1`` nearest
thresholds on each side of ``beta * x`` need a sigmoid; the rest is a prefix sum.
:func:`soft_staircase` therefore costs ``O(log n + K)`` per element instead of
``O(n)``, and its backward keeps only the inputs (no per-threshold tensor).
:func:`soft_staircase_reference` is the plain sum, kept for tests and export.

Every tensor keeps the rank of ``x`` (a 5-D broadcast ``x[..., None] - b``
breaks TFLite conversion).

Example::

    >>> import tensorflow as tf
    >>> from tf_qnets.levels import weight_levels
    >>> from tf_qnets.staircase import hard_staircase
    >>> ls = weight_levels(2)                       # {-1, 0, 1}
    >>> hard_staircase(tf.constant([-0.3, 0.01, 0.2]), 0.5, 1.0, [-0.05, 0.05], ls).numpy()
    array([-0.5,  0. ,  0.5], dtype=float32)
"""

import math

import numpy as np
import tensorflow as tf

__all__ = [
    "CLAMP",
    "GRADIENTS",
    "hard_staircase",
    "soft_staircase",
    "soft_staircase_reference",
]

CLAMP = 10.0
GRADIENTS = ("exact", "wide")
_SIG_HI = 1.0 / (1.0 + math.exp(-CLAMP))
_SIG_LO = 1.0 / (1.0 + math.exp(CLAMP))


def _as_float(value, dtype):
    return tf.cast(tf.convert_to_tensor(value), dtype)


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


def _window_half_width(b, n, temperature):
    """``K = min(n, floor(10 / (T * smallest gap)) + 1)`` as an int32 scalar."""
    dtype = b.dtype
    if n > 1:
        gap = tf.reduce_min(b[1:] - b[:-1])
    else:
        gap = tf.constant(np.inf, dtype)
    width = tf.math.floor(CLAMP / (temperature * gap)) + 1.0
    width = tf.where(tf.math.is_nan(width), float(n), tf.minimum(width, float(n)))
    return tf.cast(tf.maximum(width, 1.0), tf.int32)


def hard_staircase(x, alpha, beta, thresholds, levels):
    """Hard staircase ``alpha * (sum_i s_i [beta x > b_i] - o)`` = ``alpha * y_j``.

    ``j`` is the number of thresholds strictly below ``beta * x``; the output is
    exactly ``alpha`` times a level. ``+inf`` maps to the top level, ``-inf`` to
    the bottom one, and NaN to NaN.
    """
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    alpha = _as_float(alpha, dtype)
    beta = _as_float(beta, dtype)
    b, _, prefix, _ = _sorted_table(thresholds, levels, dtype)
    n = levels.num_steps
    j = _count_below(beta * x, b, n)
    codes = tf.gather(prefix, j) - float(levels.offset)
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


def _window_sums(u, b, s, n, temperature, j, width, with_derivative, derivative_temperature):
    """Sum over the window ``[j - K, j + K)`` of ``s_i sigma_i`` (and of ``s_i d_i``).

    The window is wide enough that every threshold outside it has a clamped
    argument; ``sum_derivative`` is zeros unless ``with_derivative``.
    """
    zero = tf.zeros_like(u)

    def body(k, sum_sigma, sum_derivative):
        for index in (j - 1 - k, j + k):
            valid = (index >= 0) & (index < n)
            safe = tf.clip_by_value(index, 0, n - 1)
            b_i = tf.gather(b, safe)
            s_i = tf.where(valid, tf.gather(s, safe), 0.0)
            diff = u - b_i
            z = tf.clip_by_value(temperature * diff, -CLAMP, CLAMP)
            sum_sigma += s_i * tf.sigmoid(z)
            if with_derivative:
                zd = derivative_temperature * diff
                sd = tf.sigmoid(tf.clip_by_value(zd, -CLAMP, CLAMP))
                inside = tf.abs(zd) <= CLAMP
                sum_derivative += tf.where(inside, s_i * sd * (1.0 - sd), 0.0)
        return k + 1, sum_sigma, sum_derivative

    _, sum_sigma, sum_derivative = tf.while_loop(
        lambda k, *_: k < width, body, (tf.constant(0), zero, zero),
        maximum_iterations=n,
    )
    return sum_sigma, sum_derivative


def _threshold_gradient(u, b, s, n, j, width, weight, derivative_temperature):
    """``sum over elements of weight * s_i d_i`` per sorted threshold index (shape [n])."""
    flat_u = tf.reshape(u, [-1])
    flat_w = tf.reshape(weight, [-1])
    flat_j = tf.reshape(j, [-1])

    def body(k, acc):
        for index in (flat_j - 1 - k, flat_j + k):
            valid = (index >= 0) & (index < n)
            safe = tf.clip_by_value(index, 0, n - 1)
            zd = derivative_temperature * (flat_u - tf.gather(b, safe))
            sd = tf.sigmoid(tf.clip_by_value(zd, -CLAMP, CLAMP))
            keep = valid & (tf.abs(zd) <= CLAMP)
            contribution = tf.where(keep, flat_w * tf.gather(s, safe) * sd * (1.0 - sd), 0.0)
            acc += tf.math.unsorted_segment_sum(contribution, safe, n)
        return k + 1, acc

    _, acc = tf.while_loop(
        lambda k, _: k < width, body, (tf.constant(0), tf.zeros([n], u.dtype)),
        maximum_iterations=n,
    )
    return acc


def _soft_codes(x, beta, thresholds, temperature, levels, derivative_temperature,
                with_derivative):
    """``sum_i s_i sigma_i - o`` through the window decomposition (and ``sum_i s_i d_i``)."""
    n = levels.num_steps
    b, s, prefix, order = _sorted_table(thresholds, levels, x.dtype)
    u = beta * x
    j = _count_below(u, b, n)
    width = _window_half_width(b, n, temperature)
    if with_derivative:
        width = tf.maximum(width, _window_half_width(b, n, derivative_temperature))
    below = tf.gather(prefix, tf.clip_by_value(j - width, 0, n))
    above = prefix[n] - tf.gather(prefix, tf.clip_by_value(j + width, 0, n))
    window, sum_derivative = _window_sums(
        u, b, s, n, temperature, j, width, with_derivative, derivative_temperature)
    codes = below * _SIG_HI + above * _SIG_LO + window - float(levels.offset)
    return codes, (sum_derivative, b, s, order, u, j, width)


def soft_staircase(x, alpha, beta, thresholds, temperature, levels, gradient="exact",
                   train_thresholds=False):
    """Soft staircase (see the module docstring), in ``O(log n + K)`` per element.

    Args:
      x: input tensor (any shape, float).
      alpha, beta: output and input scales (scalars).
      thresholds: ``[n]`` thresholds in the beta-scaled domain (any order).
      temperature: ``T > 0`` (scalar).
      levels: a :class:`tf_qnets.levels.LevelSet`.
      gradient: ``"exact"`` or ``"wide"`` (derivative at T = 1, times T; the
        authors' choice for binary weights).
      train_thresholds: compute the gradient for ``thresholds`` (frozen by
        default, as in the paper; a zero gradient is returned otherwise).

    Returns ``alpha * (sum_i s_i sigmoid(clip(T (beta x - b_i))) - o)``, equal to
    :func:`soft_staircase_reference` within float32 rounding.
    """
    if gradient not in GRADIENTS:
        raise ValueError(f"`gradient` must be one of {GRADIENTS}, got {gradient!r}.")
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    n = levels.num_steps
    wide = gradient == "wide"

    @tf.custom_gradient
    def _soft(x, alpha, beta, thresholds, temperature):
        codes, _ = _soft_codes(x, beta, thresholds, temperature, levels, temperature, False)

        def grad(upstream):
            # Recomputed from the inputs: nothing of x's size is kept from the forward pass.
            derivative_temperature = tf.ones_like(temperature) if wide else temperature
            codes, parts = _soft_codes(
                x, beta, thresholds, temperature, levels, derivative_temperature, True)
            sum_derivative, b, s, order, u, j, width = parts
            slope = alpha * temperature * sum_derivative
            d_x = upstream * slope * beta
            d_beta = tf.reduce_sum(upstream * slope * x)
            d_alpha = tf.reduce_sum(upstream * codes)
            if train_thresholds:
                per_sorted = _threshold_gradient(
                    u, b, s, n, j, width, upstream, derivative_temperature)
                d_b = -alpha * temperature * tf.math.unsorted_segment_sum(per_sorted, order, n)
            else:
                d_b = tf.zeros([n], dtype)
            return (d_x, tf.reshape(d_alpha, tf.shape(alpha)), tf.reshape(d_beta, tf.shape(beta)),
                    tf.reshape(d_b, tf.shape(thresholds)), tf.zeros_like(temperature))

        return alpha * codes, grad

    return _soft(
        x,
        _as_float(alpha, dtype),
        _as_float(beta, dtype),
        _as_float(thresholds, dtype),
        _as_float(temperature, dtype),
    )

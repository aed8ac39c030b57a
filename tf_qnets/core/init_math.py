"""The initialisation maths of the quantizers (method.md Sec. 3), in numpy.

For a tensor ``x`` with levels ``Y`` (``p = max |y|``, ``q = max |x|``)::

    beta  = (5/4 * p) / q          # the largest level maps to 0.8 * max|x|
    alpha = 1 / beta

Thresholds ``b_i`` in the beta-scaled domain:

* binary weights {-1, +1}: ``b = 0``; ternary {-1, 0, 1}: ``b = (-0.05, +0.05)`` (the
  paper, ``"kmeans"``) or, by default (``"auto"``), ``b = -/+ 0.7 mean |beta w|`` (TWN's
  dead zone: with 0.05 almost no weight is 0 and the set starts nearly binary);
* other sets, ``"kmeans"``: 1-D k-means of ``beta * x`` into ``n + 1`` clusters, sorted
  centres ``c``, ``b_i = (c_i + c_{i+1}) / 2``; for weights the two thresholds around
  level 0 are then set to -0.05 and +0.05; 1-bit activations use ``b = 0.05``
  (the authors' release);
* ``"uniform"``: halfway between neighbouring levels, ``b_i = (y_{i-1} + y_i) / 2``;
  for uniform level sets the scale then minimises the quantization MSE on the tensor
  (:func:`mse_scales`) instead of the max rule, which at 2 bits would zero most values.

The backends call these with a pretrained kernel (weights) or a sample of calibration
activations (taken layer by layer with the quantizers before already active).

Example::

    >>> import numpy as np
    >>> from tf_qnets.core.levels import weight_levels
    >>> alpha, beta = scales_for(weight_levels(2), max_abs=0.5)     # beta = 1.25 * 1 / 0.5
    >>> float(beta), weight_thresholds(np.array([-0.4, 0.0, 0.3]) * beta, weight_levels(2),
    ...                                "kmeans").tolist()
    (2.5, [-0.05, 0.05])
"""

import numpy as np

from tf_qnets.core.activation_sample import as_sample

__all__ = [
    "activation_thresholds",
    "initial_scales",
    "kmeans_1d",
    "mse_scales",
    "scales_for",
    "ternary_dead_zone",
    "weight_thresholds",
]

ZERO_BAND = 0.05
TERNARY_DEAD_ZONE = 0.7
MIN_GAP = 1e-3
MAX_KMEANS_SAMPLES = 200_000


def kmeans_1d(values, clusters, iterations=50, seed=0):
    """Lloyd's k-means on a 1-D sample; returns ``clusters`` sorted centres.

    Initialised at evenly spaced quantiles; an empty cluster keeps its centre.
    """
    data = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if data.size > MAX_KMEANS_SAMPLES:
        rng = np.random.default_rng(seed)
        data = np.sort(rng.choice(data, MAX_KMEANS_SAMPLES, replace=False))
    centres = np.quantile(data, (np.arange(clusters) + 0.5) / clusters)
    prefix = np.concatenate([[0.0], np.cumsum(data)])
    for _ in range(iterations):
        bounds = np.searchsorted(data, (centres[:-1] + centres[1:]) / 2.0)
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [data.size]])
        counts = ends - starts
        sums = prefix[ends] - prefix[starts]
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        updated = np.sort(updated)
        if np.allclose(updated, centres, rtol=0, atol=1e-9):
            centres = updated
            break
        centres = updated
    return centres


def _strictly_increasing(thresholds):
    out = np.asarray(thresholds, dtype=np.float64).copy()
    for i in range(1, out.size):
        out[i] = max(out[i], out[i - 1] + MIN_GAP)
    return out


def scales_for(levels, max_abs):
    """``(alpha, beta)`` with ``beta = 1.25 p / q``; ``q = 0`` (a dead tensor) counts as 1."""
    q = float(max_abs)
    if not np.isfinite(q) or q <= 0.0:
        q = 1.0
    beta = 1.25 * levels.max_abs / q
    return 1.0 / beta, beta


def mse_scales(values, levels, candidates=64, seed=0):
    """``(alpha, beta)`` of the uniform staircase that minimises ``E[(x - Q(x))^2]`` on a sample.

    ``Q(x) = s * y_j`` with ``j`` the number of midpoints ``(y_{i-1} + y_i) / 2`` below
    ``x / s``; the step ``s = alpha = 1 / beta`` is searched over
    ``s = r * max|x| / p`` for ``r`` in (0, 1.25]. Used for ``thresholds="uniform"``,
    where the paper's max-based scale would send most of a long-tailed tensor (ReLU
    outputs, weights) to the zero level at 2 bits. ``values``: an array or an
    :class:`tf_qnets.core.activation_sample.ActivationSample`.
    """
    sample = as_sample(values)
    if sample.size > MAX_KMEANS_SAMPLES:
        # Sample first, widen after: the sampled indices depend on the size alone, so this is
        # the same sample as from the float64 copy, without widening (or, for the batches
        # of an ActivationSample, concatenating) every element (an activation sample at
        # 224x224 holds ~10^8 values).
        data = sample.random_subset(MAX_KMEANS_SAMPLES, seed)
    else:
        data = sample.concatenated()
    data = np.asarray(data, dtype=np.float64)
    top = float(np.max(np.abs(data))) if data.size else 0.0
    if not np.isfinite(top) or top <= 0.0:
        return scales_for(levels, top)
    y = np.asarray(levels.levels, dtype=np.float64)
    midpoints = np.asarray(levels.uniform_thresholds(), dtype=np.float64)
    # Sorted data and prefix sums: each candidate's error from the bin edges alone,
    # sum_j sum_{x in bin j} (x - s y_j)^2 = S2 - 2 s y_j S1 + s^2 y_j^2 N per bin.
    data = np.sort(data)
    first = np.concatenate([[0.0], np.cumsum(data)])
    second = np.concatenate([[0.0], np.cumsum(data * data)])
    best_step, best_error = None, np.inf
    for ratio in np.linspace(1.25 / candidates, 1.25, candidates):
        step = ratio * top / levels.max_abs
        # bin j holds the x with midpoint_{j-1} < x / step <= midpoint_j
        edges = np.concatenate([[0], np.searchsorted(data, midpoints * step, side="right"),
                                [data.size]])
        count = np.diff(edges)
        total = first[edges[1:]] - first[edges[:-1]]
        squares = second[edges[1:]] - second[edges[:-1]]
        error = float(np.sum(squares - 2.0 * step * y * total + (step * y) ** 2 * count)) / data.size
        if error < best_error:
            best_step, best_error = step, error
    return best_step, 1.0 / best_step


def _kmeans_thresholds(scaled, levels):
    if np.unique(scaled).size < len(levels):
        return levels.uniform_thresholds()
    centres = kmeans_1d(scaled, len(levels))
    return (centres[:-1] + centres[1:]) / 2.0


def _paper_zero_band(thresholds, values):
    """Set the two thresholds around level 0 to -/+ ZERO_BAND, keeping the order."""
    zero = values.index(0)
    if zero > 0:
        thresholds[zero - 1] = -ZERO_BAND
    if zero < len(values) - 1:
        thresholds[zero] = ZERO_BAND
    # Keep the order if clustering put outer thresholds inside the zero band.
    thresholds[: max(zero - 1, 0)] = np.minimum(thresholds[: max(zero - 1, 0)], -ZERO_BAND - MIN_GAP)
    thresholds[zero + 1:] = np.maximum(thresholds[zero + 1:], ZERO_BAND + MIN_GAP)
    return thresholds


def ternary_dead_zone(scaled_kernel):
    """``Delta = 0.7 * mean |x|``: the ternary weights' dead zone (Li & Liu, TWN, 2016).

    Weights with ``|x| <= Delta`` become 0. For Gaussian weights this is close to the
    threshold that minimises ``E[(w - alpha * Q(w))^2]``; the paper's fixed ``0.05`` (in
    the beta domain, ``beta = 1.25 / max|w|``) zeroes only ``|w| < 0.04 max|w|``, so the
    ternary set starts almost binary.
    """
    mean_abs = float(np.mean(np.abs(scaled_kernel))) if np.size(scaled_kernel) else 0.0
    if not np.isfinite(mean_abs) or mean_abs <= 0.0:
        return ZERO_BAND
    return TERNARY_DEAD_ZONE * mean_abs


def weight_thresholds(scaled_kernel, levels, method="kmeans"):
    """Thresholds for a weight tensor already multiplied by beta (see module docstring).

    ``method``: ``"kmeans"`` (the paper's rule: k-means, the two thresholds around 0 at
    -/+ ZERO_BAND), ``"auto"`` (the same, except that a ternary set's dead zone comes from
    the data, :func:`ternary_dead_zone`) or ``"uniform"``.
    """
    if method not in ("kmeans", "auto", "uniform"):
        raise ValueError(f"method must be 'kmeans', 'auto' or 'uniform', got {method!r}.")
    values = tuple(levels.levels)
    if values == (-1, 1):
        return np.zeros(1)
    if method == "uniform":
        return levels.uniform_thresholds()
    if values == (-1, 0, 1):
        band = ZERO_BAND if method == "kmeans" else ternary_dead_zone(scaled_kernel)
        return np.array([-band, band])
    thresholds = _kmeans_thresholds(scaled_kernel, levels)
    if 0 in values:
        thresholds = _paper_zero_band(thresholds, values)
    return _strictly_increasing(thresholds)


def activation_thresholds(scaled_activations, levels, method="kmeans"):
    """Thresholds for an activation sample already multiplied by beta (see module docstring)."""
    if method == "uniform":
        return levels.uniform_thresholds()
    if tuple(levels.levels) == (0, 1):
        return np.array([ZERO_BAND])
    return _strictly_increasing(_kmeans_thresholds(scaled_activations, levels))


def initial_scales(values, levels, method):
    """``(alpha, beta)`` for a tensor: the MSE scale for uniform thresholds on uniform
    levels (:func:`mse_scales`), else the paper's max rule (:func:`scales_for`). ``values``:
    an array or an :class:`tf_qnets.core.activation_sample.ActivationSample`."""
    if method == "uniform" and levels.is_uniform:
        return mse_scales(values, levels)
    return scales_for(levels, as_sample(values).max_abs())

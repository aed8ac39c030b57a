"""BatchNormalization handling shared by the Keras 2 and Keras 3 paths (numpy only).

``quantize_model(..., batch_norm=mode)`` takes one of :data:`BATCH_NORM_MODES`:

* ``"frozen"`` (default): every plain BatchNormalization normalises with its moving
  statistics in training too and never updates them, so ``fit`` trains the network that
  ``evaluate`` computes::

      y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta   (always)

* ``"batch"``: Keras's usual behaviour (batch statistics in training, moving averages of
  them for inference); the averages then trail the trained network, and
  ``recalibrate_batch_norm`` re-measures them after ``fit``.

Re-estimating a layer's statistics (inside ``quantize_model`` on ``calibration_data``, and in
``recalibrate_batch_norm``) is :func:`population_statistics` of its inputs: the exact
population mean and variance over every axis but the normalised ones, accumulated batch by
batch in float64 (Chan et al.'s pairwise update, so no batch is kept and no large sum of
squares cancels; each batch's squared deviations from its own mean are summed in float64)::

    n = n_a + n_b,  d = mean_b - mean_a
    mean = mean_a + d * n_b / n
    M2   = M2_a + M2_b + d^2 * n_a * n_b / n          variance = M2 / n

Example::

    >>> import numpy as np
    >>> x = np.arange(24, dtype="float32").reshape(4, 3, 2)
    >>> mean, variance = population_statistics([x[:1], x[1:]], axis=-1)
    >>> flat = x.reshape(-1, 2)
    >>> bool(np.allclose(mean, flat.mean(0)) and np.allclose(variance, flat.var(0)))
    True
"""

import numpy as np

__all__ = [
    "BATCH_NORM_MODES",
    "check_batch_norm_mode",
    "check_max_batches",
    "frozen_recalibration_message",
    "population_statistics",
    "stale_statistics_message",
]

# quantize_model(batch_norm=...): "frozen" (default) or "batch" (Keras's usual behaviour).
BATCH_NORM_MODES = ("frozen", "batch")


def check_batch_norm_mode(batch_norm):
    """Raise ValueError naming ``batch_norm`` unless it is one of :data:`BATCH_NORM_MODES`."""
    if not isinstance(batch_norm, str) or batch_norm not in BATCH_NORM_MODES:
        raise ValueError(
            f"`batch_norm` must be one of {BATCH_NORM_MODES}, got {batch_norm!r}: 'frozen' "
            "(default) normalises with the moving statistics in training too, so fit trains "
            "what evaluate and the exported file compute; 'batch' keeps Keras's usual batch "
            "statistics.")


def check_max_batches(max_batches):
    """Raise ValueError naming ``max_batches`` unless it is a positive int or None."""
    if max_batches is not None and (
            isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"`max_batches` must be a positive int or None, got {max_batches!r}.")


def stale_statistics_message(names, batch_norm):
    """The warning for BatchNormalization layers ``names`` after quantized layers that keep
    the float model's statistics (``quantize_model`` got no ``calibration_data``)."""
    consequence = (
        "fit keeps them frozen (batch_norm='frozen'), so gamma and beta must make up for "
        "them" if batch_norm == "frozen" else
        "the model evaluates poorly until fine-tuning has updated them")
    return (
        f"BatchNormalization layers {list(names)} keep the float model's moving statistics, "
        f"which no longer match the quantized weights: {consequence}. Pass `calibration_data` "
        "(a few batches of training inputs) to measure them on the quantized network now.")


def frozen_recalibration_message(names):
    """The warning of ``recalibrate_batch_norm`` for layers trained with frozen statistics."""
    return (
        f"recalibrate_batch_norm: layers {list(names)} were trained with their statistics "
        "frozen (quantize_model's default batch_norm='frozen'): fit, evaluate and export "
        "already agree, and new statistics change the network that fit optimised, usually "
        "for the worse (docs/train.md). Recalibrating anyway; this step is meant for models "
        "quantized with batch_norm='batch'.")


def _reduce_axes(ndim, axis):
    kept = set()
    for a in np.atleast_1d(axis):
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"`axis` {a} is out of range for inputs of rank {ndim}.")
        kept.add(a % ndim)
    return tuple(i for i in range(ndim) if i not in kept)


def population_statistics(batches, axis=-1):
    """Exact mean and (population) variance of ``batches`` over all axes but ``axis``.

    Args:
      batches: an iterable of arrays (read once, one at a time), e.g. a BatchNormalization
        layer's inputs batch by batch; all of the same rank and normalised-axis sizes.
      axis: the normalised axis or axes (a BatchNormalization's ``axis``).

    Returns:
      ``(mean, variance)``, float64 arrays with the sizes of the ``axis`` dimensions
      (flattened in axis order when there are several).

    Raises:
      ValueError: ``batches`` is empty (holds no element).
    """
    count, mean, m2, reduce, subscripts = 0, None, None, None, None
    for batch in batches:
        values = np.asarray(batch)
        if values.dtype not in (np.float32, np.float64):
            values = values.astype(np.float64)
        if reduce is None:
            reduce = _reduce_axes(values.ndim, axis)
            letters = "abcdefghijklmnopqrstuvwxyz"[:values.ndim]
            kept = "".join(letters[i] for i in range(values.ndim) if i not in reduce)
            subscripts = f"{letters},{letters}->{kept}"
        n = int(np.prod([values.shape[i] for i in reduce]))
        if n == 0:
            continue
        batch_mean = np.mean(values, axis=reduce, dtype=np.float64)
        # Deviations from the mean rounded to the input's precision, their squares summed in
        # float64 (no float64 copy of a 224x224 batch): sum (x - c)^2 = M2 + n (mean - c)^2
        # exactly, with c the rounded mean; the deviations' rounding leaves a relative error
        # of about 1e-10 in the variance (float32 input; the result is stored in float32).
        centre = batch_mean.astype(values.dtype)
        deviations = values - np.expand_dims(centre, reduce)
        shift = batch_mean - centre.astype(np.float64)
        batch_m2 = np.maximum(np.einsum(subscripts, deviations, deviations, dtype=np.float64)
                              - n * np.square(shift), 0.0)
        if count == 0:
            mean, m2 = batch_mean, batch_m2
        else:
            total = count + n
            delta = batch_mean - mean
            mean = mean + delta * (n / total)
            m2 = m2 + batch_m2 + np.square(delta) * (count * n / total)
        count += n
    if count == 0:
        raise ValueError("`batches` holds no values to take statistics of.")
    return mean.ravel(), (m2 / count).ravel()

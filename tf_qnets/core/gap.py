"""The quantization gap, without a framework: how far training's forward is from the deployed one.

During training a quantizer computes the soft staircase (below ``T = 100``); ``evaluate``
and the exported file compute the hard one. For one quantized tensor the gap is the mean
distance between the two, in units of the level grid::

    gap = mean_k | soft(x_k) - hard(x_k) | / |alpha|        (k over a fixed sample of x)

0 means training computes exactly the deployed values (``T >= 100``, where the forward is
hard); 0.5 means the average value sits half a level away from where the deployed network
puts it. Both Keras paths measure it on the same sample (:func:`sample_indices`): all of a
kernel, and for an activation the first example of the batch, at an even stride down to
at most :data:`GAP_SAMPLE_SIZE` elements, so that measuring costs a few thousand elements
per quantizer and step. ``TemperatureScheduler`` shows the mean over the quantizers as
``quant_gap`` (:data:`GAP_LOG_NAME`) in the progress bar and the ``History``.

Example::

    >>> round(gap([0.1, 1.9, 3.0], [0.0, 2.0, 3.0], alpha=0.5), 6)   # mean |soft - hard| / alpha
    0.133333
    >>> sample_indices(10, limit=4).tolist()                  # stride 10 // 4 = 2, first 4
    [0, 2, 4, 6]
"""

import numpy as np

__all__ = ["GAP_LOG_NAME", "GAP_SAMPLE_SIZE", "gap", "sample_indices"]

# Elements of one tensor that the gap is measured on, at most.
GAP_SAMPLE_SIZE = 4096
# The name of the mean gap in the training logs.
GAP_LOG_NAME = "quant_gap"


def sample_indices(size, limit=GAP_SAMPLE_SIZE):
    """Indices into a flattened tensor of ``size`` elements that the gap is measured on:
    every ``size // limit``-th element (every one when ``size <= limit``), the first ``limit``."""
    stride = size // limit if size > limit else 1
    return np.arange(0, size, stride)[:limit]


def gap(soft_values, hard_values, alpha):
    """``mean |soft - hard| / |alpha|`` in float64 (0 for an empty sample; ``|alpha|`` floored
    at 1e-12 as the framework versions do)."""
    soft_values = np.asarray(soft_values, np.float64).ravel()
    hard_values = np.asarray(hard_values, np.float64).ravel()
    if soft_values.size == 0:
        return 0.0
    scale = max(abs(float(alpha)), 1e-12)
    return float(np.mean(np.abs(soft_values - hard_values)) / scale)

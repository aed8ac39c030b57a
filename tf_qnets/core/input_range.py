"""The int8 range of a model input, chosen so that no typical input sits on a rounding tie.

An integer TFLite file quantizes its float input with ``q = round(x / s) + z`` (``s = (hi -
lo) / 255`` from the calibrated range, ``z`` an integer). When the inputs lie on a lattice
whose points fall halfway between two int8 codes, every ``x / s`` is a tie: ``x = (k - 127.5)
* 2/255`` for 8-bit pixels ``k`` scaled to ``[-1, 1]`` (``keras.applications`` MobileNet
preprocessing, ``x / 127.5 - 1``) and the calibrated range ``[-1, 1]`` give ``x / s = k -
127.5`` for every pixel. A tie is rounded away from zero by TFLite's reference kernels and to
even by XNNPACK, so the file moves every pixel by half a step, outward or by parity: a bias
correlated with the image that the first layer sums up. On a random-weights MobileNetV2
(32x32, W4A4, reference kernels) its first staircase flipped 1.40% of its codes that way, and
0.83% once the range was widened as below (0.005% with 0..255 integer inputs, where ``s = 1``
and no rounding happens at all).

:func:`tie_free_range` keeps ``[lo, hi]`` unless more than ``TIE_SHARE`` of the sample values
lie within ``TIE_MARGIN`` (in steps) of a tie; then it widens the range's far end by the
smallest of ``1/1024, 2/1024, ...`` of its width after which no more of them do than of
evenly spread values (``2 * TIE_MARGIN``). Only the scale
matters: with an integer zero point, ``x`` is a tie exactly when ``frac(x / s) = 1/2``.

Example::

    >>> import numpy as np
    >>> pixels = np.arange(256) / 127.5 - 1.0          # MobileNet preprocessing of 0..255
    >>> tie_share(pixels, -1.0, 1.0)
    1.0
    >>> lo, hi = tie_free_range(-1.0, 1.0, pixels)
    >>> (lo, round(hi, 5)), tie_share(pixels, lo, hi)
    ((-1.0, 1.00586), 0.0)
    >>> tie_free_range(0.0, 255.0, np.arange(256.0))   # integers at scale 1: exact already
    (0.0, 255.0)
"""

import numpy as np

from tf_qnets.core.activation_sample import as_sample

__all__ = ["TIE_MARGIN", "TIE_SHARE", "TIE_PRONE_OUTPUTS", "calibrated_input_range",
           "tie_free_output_range", "tie_free_range", "tie_share"]

# Layers whose int8 output values lie on a lattice (pixels scaled by the model, products,
# sums and concatenations of int8 tensors, means of int8 windows): their int8 output range is
# chosen by :func:`tie_free_output_range`. A range calibrated to the sample's extremes puts
# them on the lattice too, and then ``s`` is a simple fraction of the lattice step: on a
# DenseNet-like block 1% of a concatenation's values sat on a tie.
TIE_PRONE_OUTPUTS = ("Rescaling", "Multiply", "Add", "Concatenate", "AveragePooling2D",
                     "GlobalAveragePooling2D")

TIE_MARGIN = 1e-3      # steps: far above float32 rounding of x / s, far below a step
TIE_SHARE = 1e-2       # 5x the share of continuous values in the band: more, and it widens
_MAX_WIDENING = 64     # in 1/1024 of the width: at most 6.25% of the range
_MAX_SAMPLE_VALUES = 1 << 16   # distinct input values kept to check the range for ties


def _scale(lo, hi):
    return (float(hi) - float(lo)) / 255.0


def tie_share(values, lo, hi):
    """Fraction of ``values`` within ``TIE_MARGIN`` steps of a rounding tie of the int8 grid
    that the range ``[lo, hi]`` gives (``|frac(x / s) - 1/2| < TIE_MARGIN``)."""
    values = np.asarray(values, np.float64).ravel()
    scale = _scale(lo, hi)
    if values.size == 0 or scale <= 0.0:
        return 0.0
    position = values / scale
    return float(np.mean(np.abs(position - np.floor(position) - 0.5) < TIE_MARGIN))


def tie_free_range(lo, hi, values):
    """``(lo, hi)``, widened at its far end (the larger of ``|lo|``, ``|hi|``) when more than
    ``TIE_SHARE`` of ``values`` would be rounding ties (see the module docstring)."""
    lo, hi = float(lo), float(hi)
    values = np.unique(np.asarray(values, np.float64).ravel())
    if hi - lo <= 0.0 or tie_share(values, lo, hi) <= TIE_SHARE:
        return lo, hi
    width = hi - lo
    for step in range(1, _MAX_WIDENING + 1):
        extra = width * step / 1024.0
        candidate = (lo, hi + extra) if hi >= -lo else (lo - extra, hi)
        if tie_share(values, *candidate) <= 2 * TIE_MARGIN:    # as few as continuous values
            return candidate
    return lo, hi


def calibrated_input_range(batches):
    """The int8 range of a model input from representative ``batches`` (arrays):
    ``[min(x, 0), max(x, 0)]`` over all of them, made :func:`tie_free_range` on their
    distinct values (the first ``2**16`` found).

    >>> calibrated_input_range([np.arange(256.0).reshape(16, 16) / 127.5 - 1.0])[1] > 1.0
    True
    """
    lo = hi = 0.0
    values = set()
    for batch in batches:
        batch = np.asarray(batch, np.float32)
        if batch.size == 0:
            continue
        lo, hi = min(lo, float(np.min(batch))), max(hi, float(np.max(batch)))
        if len(values) < _MAX_SAMPLE_VALUES:
            values.update(np.unique(batch).tolist())
    return tie_free_range(lo, hi, np.fromiter(values, np.float64))


def tie_free_output_range(sample, max_values=_MAX_SAMPLE_VALUES * 16):
    """``[min(x, 0), max(x, 0)]`` of an activation ``sample`` (an array or an
    :class:`tf_qnets.core.activation_sample.ActivationSample`), made :func:`tie_free_range` on
    the distinct values among its first ``max_values`` (the lattice shows in any part of it).

    >>> products = np.outer(np.arange(-128, 128), np.arange(16)).ravel() * (0.02 * 0.1)
    >>> lo, hi = tie_free_output_range(products)
    >>> tie_share(products, lo, hi) <= 2 * TIE_MARGIN
    True
    """
    sample = as_sample(sample)
    lo, hi = min(sample.min(), 0.0), max(sample.max(), 0.0)
    return tie_free_range(lo, hi, np.unique(sample.head(max_values)))


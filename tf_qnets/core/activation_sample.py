"""An activation sample kept as the batches it was computed in, never copied into one array.

The layer-by-layer calibration walk (``keras2/init.py``) sees each activation tensor as one
array per calibration batch; at 224x224 a DenseNet121 concatenation holds about 10^8 values
over 128 images, and one ``np.concatenate`` of them costs more than the statistics it feeds.
The initialisation needs only

* the extremes ``min x``, ``max x`` and ``max |x|`` (the max rule, the 8-bit ranges) and
  whether every value is finite (``min`` and ``max`` are finite iff all values are: NaN
  propagates through both);
* a leading slice (the rounding-tie check of
  :func:`tf_qnets.core.input_range.tie_free_output_range`);
* a random subset (the MSE scale of :func:`tf_qnets.core.init_math.mse_scales`):
  ``random_subset(k, seed)`` returns exactly ``np.random.default_rng(seed).choice(x, k,
  replace=False)`` of the concatenation ``x``, drawn as indices into the batches.

Example::

    >>> s = ActivationSample([np.arange(6.0).reshape(2, 3), -np.ones(4)])
    >>> s.size, s.min(), s.max(), s.max_abs(), s.all_finite(), s.head(4).tolist()
    (10, -1.0, 5.0, 5.0, True, [0.0, 1.0, 2.0, 3.0])
    >>> whole = s.concatenated()
    >>> bool(np.array_equal(s.random_subset(4, seed=0),
    ...                     np.random.default_rng(0).choice(whole, 4, replace=False)))
    True
"""

import numpy as np

__all__ = ["ActivationSample", "as_sample"]


class ActivationSample:
    """The values of ``parts`` (arrays of any shapes), in order, as one flat sample."""

    def __init__(self, parts):
        self.parts = [flat for flat in (np.asarray(part).ravel() for part in parts) if flat.size]
        self.size = int(sum(part.size for part in self.parts))
        self._extremes = None

    def _min_max(self):
        if self._extremes is None:
            if not self.parts:
                raise ValueError("An empty activation sample has no extremes.")
            lows = [np.min(part) for part in self.parts]
            highs = [np.max(part) for part in self.parts]
            # NaN propagates through min and max: a NaN part makes both NaN
            self._extremes = (float(np.min(lows)), float(np.max(highs)))
        return self._extremes

    def min(self):
        return self._min_max()[0]

    def max(self):
        return self._min_max()[1]

    def max_abs(self):
        low, high = self._min_max()
        return max(-low, high)

    def all_finite(self):
        low, high = self._min_max()
        return bool(np.isfinite(low) and np.isfinite(high))

    def head(self, count):
        """The first ``count`` values (all of them when there are fewer)."""
        taken, kept = [], 0
        for part in self.parts:
            if kept >= count:
                break
            taken.append(part[:count - kept])
            kept += taken[-1].size
        return np.concatenate(taken) if taken else np.zeros(0, np.float32)

    def random_subset(self, count, seed=0):
        """``np.random.default_rng(seed).choice(self.concatenated(), count, replace=False)``,
        gathered from the parts without concatenating them."""
        indices = np.random.default_rng(seed).choice(self.size, count, replace=False)
        starts = np.cumsum([0] + [part.size for part in self.parts])
        owner = np.searchsorted(starts, indices, side="right") - 1
        dtype = np.result_type(*self.parts)
        subset = np.empty(count, dtype)
        for index, part in enumerate(self.parts):
            chosen = owner == index
            subset[chosen] = part[indices[chosen] - starts[index]]
        return subset

    def concatenated(self):
        """Every value in one array (a copy: only where all of them are needed)."""
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)


def as_sample(values):
    """``values`` as an :class:`ActivationSample` (an array becomes one part, not copied)."""
    return values if isinstance(values, ActivationSample) else ActivationSample([values])

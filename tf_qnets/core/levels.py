"""Level sets: the integer outputs of a quantizer, and the step structure derived from them.

A level set ``Y = {y_0 < y_1 < ... < y_n}`` of integers defines a staircase with ``n``
steps. Following the method (Yang et al., CVPR 2019, Sec. 3):

* step heights ``s_i = y_i - y_{i-1}`` for ``i = 1..n``;
* offset ``o = -y_0`` so that the staircase starts at ``y_0``
  (for symmetric sets this equals ``sum_i s_i / 2``).

Presets per bit width:

====== ============================================ ==============================
bits   weights                                      activations (unsigned / signed)
====== ============================================ ==============================
1      {-1, +1}                                     {0, 1} / {-1, +1}
2      {-1, 0, 1}                                   {0..3} / {-1, 0, 1}
3      {-4, -2, -1, 0, 1, 2, 4} (``"pow2"``, paper)  {0..7} / {-3..3}
       or {-3..3} (``"uniform"``)
4..8   {-(2^(b-1)-1) .. 2^(b-1)-1}                  {0..2^b-1} / {-(2^(b-1)-1)..}
====== ============================================ ==============================

Example::

    >>> from tf_qnets.core.levels import weight_levels
    >>> ls = weight_levels(3)
    >>> ls.levels, ls.steps, ls.offset
    ((-4, -2, -1, 0, 1, 2, 4), (2, 1, 1, 1, 1, 2), 4)
"""

import dataclasses
import numbers

import numpy as np

__all__ = ["LevelSet", "weight_levels", "activation_levels", "resolve_levels"]

MIN_BITS = 1
MAX_BITS = 8
MAX_LEVELS = 256
WEIGHT_SCHEMES = ("pow2", "uniform")


@dataclasses.dataclass(frozen=True)
class LevelSet:
    """A sorted tuple of distinct integer levels: at least two, at most 256, spanning at most 255."""

    levels: tuple

    def __post_init__(self):
        object.__setattr__(self, "levels", _validated_levels(self.levels, "levels"))

    @property
    def num_steps(self):
        """``n``: the number of thresholds / sigmoids."""
        return len(self.levels) - 1

    @property
    def steps(self):
        """``s_i = y_i - y_{i-1}``."""
        return tuple(int(b - a) for a, b in zip(self.levels[:-1], self.levels[1:]))

    @property
    def offset(self):
        """``o = -y_0``."""
        return -int(self.levels[0])

    @property
    def max_abs(self):
        """``p = max |y|``, used by the initialisation ``beta = 1.25 p / max|x|``."""
        return max(abs(int(v)) for v in self.levels)

    @property
    def is_uniform(self):
        """True when every step has the same height."""
        return len(set(self.steps)) == 1

    @property
    def bits(self):
        """Bits needed to store one code: ``ceil(log2(number of levels))``."""
        return max(1, int(np.ceil(np.log2(len(self.levels)))))

    @property
    def is_signed(self):
        return self.levels[0] < 0

    def uniform_thresholds(self):
        """Thresholds halfway between neighbouring levels, ``b_i = (y_{i-1} + y_i) / 2``."""
        y = np.asarray(self.levels, dtype=np.float64)
        return (y[:-1] + y[1:]) / 2.0

    def __len__(self):
        return len(self.levels)


def _validated_levels(levels, argument):
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__iter__"):
        raise TypeError(
            f"`{argument}` must be a sorted sequence of distinct integers such as "
            f"(-1, 0, 1), got {levels!r}."
        )
    values = list(levels)
    for v in values:
        is_int = isinstance(v, numbers.Integral) and not isinstance(v, bool)
        is_integral_float = isinstance(v, numbers.Real) and not isinstance(v, bool) and float(v).is_integer()
        if not (is_int or is_integral_float):
            raise TypeError(
                f"`{argument}` must contain integers only (levels are integer codes); "
                f"got {v!r} in {values!r}."
            )
    values = [int(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"`{argument}` needs at least two levels, got {values!r}.")
    if len(values) > MAX_LEVELS:
        raise ValueError(
            f"`{argument}` has {len(values)} levels; at most {MAX_LEVELS} (8 bits) are supported."
        )
    if len(set(values)) != len(values):
        raise ValueError(f"`{argument}` contains duplicates: {values!r}. Levels must be distinct.")
    if values != sorted(values):
        raise ValueError(
            f"`{argument}` must be sorted in increasing order, got {values!r} "
            f"(did you mean {sorted(values)!r}?)."
        )
    if values[-1] - values[0] > 255 or values[0] < -255 or values[-1] > 255:
        raise ValueError(
            f"`{argument}` must span at most 255 (y_n - y_0 <= 255, within [-255, 255]) so that "
            f"codes fit in 8 bits with a zero point; got {values[0]}..{values[-1]}."
        )
    return tuple(values)


def _validated_bits(bits, argument):
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise TypeError(f"`{argument}` must be an int from {MIN_BITS} to {MAX_BITS}, got {bits!r}.")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"`{argument}` must be from {MIN_BITS} to {MAX_BITS}, got {bits}.")
    return int(bits)


def weight_levels(bits, scheme="pow2"):
    """Preset weight level set for ``bits`` (see the module table).

    ``scheme`` only matters at 3 bits: ``"pow2"`` gives the paper's
    {-4, -2, -1, 0, 1, 2, 4}, ``"uniform"`` gives {-3, ..., 3}.
    """
    bits = _validated_bits(bits, "w_bits")
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"`weight_scheme` must be one of {WEIGHT_SCHEMES}, got {scheme!r}.")
    if bits == 1:
        return LevelSet((-1, 1))
    if bits == 2:
        return LevelSet((-1, 0, 1))
    if bits == 3 and scheme == "pow2":
        return LevelSet((-4, -2, -1, 0, 1, 2, 4))
    top = 2 ** (bits - 1) - 1
    return LevelSet(tuple(range(-top, top + 1)))


def activation_levels(bits, signed=False):
    """Preset activation level set: {0..2^b-1}, or a symmetric signed set for inputs that can be negative."""
    bits = _validated_bits(bits, "a_bits")
    if not signed:
        return LevelSet(tuple(range(0, 2**bits)))
    if bits == 1:
        return LevelSet((-1, 1))
    top = 2 ** (bits - 1) - 1
    return LevelSet(tuple(range(-top, top + 1)))


def resolve_levels(spec, kind, argument, signed=False, weight_scheme="pow2"):
    """Turn a user's setting (bit width, sequence of levels or LevelSet) into a LevelSet.

    ``kind`` is ``"weights"`` or ``"activations"``; ``argument`` names the user's
    argument in error messages.
    """
    if isinstance(spec, LevelSet):
        return spec
    if isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
        if not MIN_BITS <= spec <= MAX_BITS:
            raise ValueError(
                f"`{argument}` must be a bit width from {MIN_BITS} to {MAX_BITS} or a sorted "
                f"sequence of integer levels, got {spec}."
            )
        if kind == "weights":
            return weight_levels(int(spec), weight_scheme)
        return activation_levels(int(spec), signed=signed)
    if isinstance(spec, (list, tuple, np.ndarray)):
        return LevelSet(_validated_levels(spec, argument))
    raise TypeError(
        f"`{argument}` must be an int bit width ({MIN_BITS}..{MAX_BITS}), a sorted sequence of "
        f"integer levels, or None; got {type(spec).__name__} {spec!r}."
    )

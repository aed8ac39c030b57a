"""Exact single-requantization lowering of a uniform staircase read from a kernel layer.

A kernel layer (BN folded) feeding a uniform staircase computes, per output channel ``c``,
the Keras pre-activation ``z = S_c * A + b_c`` from the integer accumulator ``A`` (``S_c``
the accumulator unit: input scale times weight scale). Keras decides code ``y_i`` when
``beta * z > b_i``, i.e. when

    A > p_i = (b_i / beta - b_c) / S_c.

TFLite requantizes ``A`` once: ``code = clip(round(beta * S'_c * (A + B_c)))`` with an
integer bias ``B_c``, so it passes level ``y_i`` when ``A >= r_i = a_i * u_c - B_c``
(``a_i = y_i - 1/2``, ``u_c = 1 / (beta * S'_c)``). Rounding the folded bias to an
integer (``S'_c = S_c``, ``B_c = round(b_c / S_c)``) moves every ``r_i`` by up to half a
unit, and the int8 requantization itself rounds once more: a code flips wherever ``A``
can sit between ``p_i`` and ``r_i``.

``A`` only takes values on a lattice ``L_c Z``: ``L_c = m * gcd(codes of channel c)``
with ``m`` the input's code multiplier (a lowered staircase stores level ``y`` as
``m * y``; any other int8 input has ``m = 1``). So the device agrees with Keras on every
input exactly when each ``r_i`` lies in the same lattice gap as ``p_i``:

    L_c J_i + margin  <  a_i u_c - B_c  <  L_c (J_i + 1) - margin,    J_i = floor(p_i / L_c)

with margins (in accumulator units) that cover the requantization's own rounding.
XNNPACK requantizes with one float32 multiplication and one rounding: a margin of
``EPSILON`` on both sides covers it. TFLite's reference kernels (and CMSIS-NN, TFLite Micro)
round twice: with ``E = beta S'_c = mu 2**-s`` (``1/2 <= mu < 1``, ``s >= 1``) they compute
``round(round(mu (A + B)) / 2**s)``; since ``(k - 1/2) 2**s`` is an integer, that passes
level ``k`` exactly when ``A + B >= (k - 1/2) / E - delta`` with ``delta = 1 / (2 mu)``
(between 1/2 and 1 unit): the same transition moved down by ``delta``. So the lower margin
is ``delta + EPSILON`` and the upper one ``EPSILON`` ("double" margins; "single": ``EPSILON``
on both sides).
:func:`align_channels` searches, per channel, the integer ``B_c`` nearest the folded bias
and the scale ``u_c`` nearest the trained one that satisfy every inequality; ``S'_c`` is
realised by scaling the channel's weight scale (the stored codes do not change). Channels
without a solution (a lattice too fine for the margins) keep the plain rounding and are
reported.

Example::

    plan = align_channels(units, bias, lattice, beta=2.0, thresholds=[0.5, 1.5, 2.5],
                          levels=activation_levels(2))
    plan.gain       # multiply the channel's kernel, weight range and bias by this
    plan.bias       # the new real bias (an exact integer number of new units)
"""

import dataclasses

import numpy as np

__all__ = ["ChannelAlignment", "align_channels", "channel_lattice", "double_rounding_shift",
           "DEFAULT_MARGINS"]

# Margins tried in turn: "double" covers TFLite's reference kernels (two roundings, see the
# module docstring) and XNNPACK; "single" covers XNNPACK's one float32 rounding only.
DEFAULT_MARGINS = ("double", "single")
MARGIN_KINDS = ("double", "single")
# Distance (accumulator units) kept from a lattice point beyond the rounding's own shift: far
# more than float32 errors in the requantization scale (relative 1e-7 of accumulators < 1e6).
EPSILON = 0.25
MAX_SHIFT = 256          # largest |B_c - round(b_c / S_c)| tried, in accumulator units
_DEAD_LATTICE = 2.0 ** 40   # a channel whose codes are all 0: the accumulator is always 0


@dataclasses.dataclass
class ChannelAlignment:
    """Per-channel result of :func:`align_channels`.

    ``gain``: factor for the channel's weight scale (kernel, quantization range) and bias;
    ``bias``: the new real bias, ``B_c * S_c * gain`` (already multiplied by ``gain``);
    ``exact``: True where every decision equals the Keras one with the safe margin;
    ``solved``: True where some margin was met (exact under single-rounding requantization).
    """

    gain: np.ndarray
    bias: np.ndarray
    exact: np.ndarray
    solved: np.ndarray = None

    @property
    def inexact_channels(self):
        return int(np.sum(~self.exact))

    @property
    def unsolved_channels(self):
        return int(np.sum(~self.solved))


def channel_lattice(codes, input_multiplier=1):
    """``L_c = m * gcd_c |codes|`` over all but the last axis (``2**40`` for an all-zero channel)."""
    codes = np.abs(np.asarray(codes, np.int64)).reshape(-1, np.shape(codes)[-1])
    gcd = np.gcd.reduce(codes, axis=0).astype(np.float64)
    lattice = np.where(gcd > 0, gcd * float(input_multiplier), _DEAD_LATTICE)
    return lattice


def double_rounding_shift(scale):
    """``delta = 1 / (2 mu)`` for the requantization scale ``E = mu 2**-s`` (accumulator units):
    how far TFLite's two roundings move a transition down. 1 (the largest) where the
    mantissa ``mu`` sits so near 1/2 or 1 that an alignment gain could carry it across."""
    mantissa = np.frexp(np.asarray(scale, np.float64))[0]
    safe = (mantissa > 0.505) & (mantissa < 0.995)
    return np.where(safe, 0.5 / np.where(mantissa > 0, mantissa, 1.0), 1.0)


def _margins(kind, units, beta):
    """``(lower, upper)`` margins per channel for a margin ``kind`` ("double" or "single")."""
    if kind not in MARGIN_KINDS:
        raise ValueError(f"margin kind must be one of {MARGIN_KINDS}, got {kind!r}.")
    upper = np.full(units.shape, EPSILON)
    if kind == "single":
        return upper, upper
    return double_rounding_shift(float(beta) * units) + EPSILON, upper


def _transition_points(levels):
    """``a_i = y_i - 1/2`` for the levels ``y_1 .. y_n`` (unit steps)."""
    return np.asarray(levels.levels[1:], np.float64) - 0.5


def align_channels(units, bias, lattice, beta, thresholds, levels, margins=DEFAULT_MARGINS,
                   max_shift=MAX_SHIFT):
    """Per-channel gain and bias that make one int8 requantization reproduce Keras' codes.

    Tries each margin kind in ``margins`` in turn for the channels not solved yet (see
    :func:`_align`); ``exact`` is True for channels solved with the first (safe) margins.
    """
    result = None
    for margin in margins:
        found = _align(units, bias, lattice, beta, thresholds, levels, margin, max_shift)
        if result is None:
            result = found
            result.exact = found.solved.copy()
            continue
        take = ~result.solved & found.solved
        result.gain = np.where(take, found.gain, result.gain)
        result.bias = np.where(take, found.bias, result.bias)
        result.solved |= take
    return result


def _align(units, bias, lattice, beta, thresholds, levels, margin, max_shift):
    """One pass of :func:`align_channels` with one ``margin``.

    Args:
      units: ``S_c``, the real value of one accumulator unit per channel.
      bias: ``b_c``, the folded real bias per channel.
      lattice: ``L_c`` (:func:`channel_lattice`).
      beta, thresholds, levels: the staircase (uniform levels, ``thresholds`` the trained
        ``b_i`` in the beta domain).
      margin: margin kind, "double" or "single" (:func:`_margins`).
    """
    units = np.asarray(units, np.float64).ravel()
    bias = np.asarray(bias, np.float64).ravel()
    lattice = np.asarray(lattice, np.float64).ravel()
    channels = units.size
    a = _transition_points(levels)                          # [n]
    t = np.asarray(thresholds, np.float64) / float(beta)    # [n]
    if a.size != t.size:
        raise ValueError(f"{t.size} thresholds for {len(levels.levels)} levels.")
    if not np.all(units > 0):
        return ChannelAlignment(np.ones(channels), bias.copy(), np.zeros(channels, bool),
                                np.zeros(channels, bool))
    lower, upper = _margins(margin, units, beta)
    p = (t[None, :] - bias[:, None]) / units[:, None]       # [C, n] Keras transitions
    gap = np.floor(p / lattice[:, None])
    lo = lattice[:, None] * gap + lower[:, None]
    hi = lattice[:, None] * (gap + 1.0) - upper[:, None]
    wide = np.all(hi > lo, axis=1)
    trained_u = 1.0 / (float(beta) * units)                 # u with S' = S
    base = np.round(bias / units)
    gain = np.ones(channels)
    new_bias = bias.copy()
    exact = np.zeros(channels, bool)
    pending = wide.copy()
    for step in range(2 * max_shift + 1):
        if not pending.any():
            break
        shift = (step + 1) // 2 * (1 if step % 2 else -1)
        b_int = base + shift                                # [C]
        low = (lo + b_int[:, None]) / a[None, :]
        high = (hi + b_int[:, None]) / a[None, :]
        u_min = np.max(np.where(a[None, :] > 0, low, high), axis=1)
        u_max = np.min(np.where(a[None, :] > 0, high, low), axis=1)
        u_min = np.maximum(u_min, 0.0)
        ok = pending & (u_max > u_min)
        if not ok.any():
            continue
        width = u_max - u_min
        u = np.clip(trained_u, u_min + 0.25 * width, u_max - 0.25 * width)
        g = trained_u / u                                   # S'_c = S_c * g
        gain = np.where(ok, g, gain)
        new_bias = np.where(ok, b_int * units * g, new_bias)
        exact |= ok
        pending &= ~ok
    return ChannelAlignment(gain, new_bias, exact, exact.copy())

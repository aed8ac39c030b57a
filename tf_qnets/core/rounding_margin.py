"""Int8 roundings that float32 cannot decide differently: a kernel layer's scale put on an odd grid.

A kernel layer whose output (BatchNormalization folded) is stored at a fixed int8 range
(the projections and last convolutions before a residual ``Add``) computes, per output
channel ``c``, the value ``z = u_c (A + B_c)`` in int8 steps of size ``s``: ``A`` the integer
accumulator, which only takes values in ``L_c Z`` (:func:`tf_qnets.core.alignment.channel_lattice`),
``u_c`` its unit and ``B_c`` the int32 bias (:mod:`tf_qnets.core.bias_lattice`). The file
rounds ``v = z / s`` exactly; the Keras hard model rounds the float32 value of ``v``, off by a
few 1e-6 of it. Where an exact ``v`` sits that close to a half-integer the two part, and the
network spreads the flipped int8 value (on ResNet50, these roundings were where Keras and the
file first disagree; every aligned staircase agreed).

With ``x_c = u_c L_c / s`` (how many int8 steps one lattice step is) replaced by a fraction
``p / q`` with an **odd** ``q <= MAX_DENOMINATOR``, every ``v`` is ``(p / q) j + r`` (``j``
an integer, ``r = u_c B_c / s``); odd ``q`` keeps ``(p / q) Z`` at least ``1 / (2 q)`` from every
half-integer, and choosing ``B_c`` so that ``r`` is within ``1 / (2 q) - MARGIN`` of ``(1 / q) Z``
keeps every ``v`` at least ``MARGIN`` int8 steps from a rounding boundary, far beyond float32's
error. The gain ``p / (q x_c)`` (the best odd-denominator fraction: a relative change of
about ``1 / (q^2 x_c)``, ``MAX_GAIN_CHANGE`` at most) goes into the channel's BatchNormalization
scale, ``B_c`` (the integer nearest the gained bias that keeps the margin) into its offset.
Without a BN, where every channel has the same unit ``u`` and ``L_c = g_c L``, one gain on the
output step ``s`` does it for all channels: ``u L / s = p / q`` makes ``x_c = g_c p / q``.
A channel without such a fraction (a lattice much finer than the int8 step: a first layer
with 8-bit weights reading 8-bit pixels, ``x_c`` a few 1e-4) gets the *fine* grid instead: the
smallest odd ``q <= MAX_FINE_DENOMINATOR`` with a ``p / q`` within ``MAX_GAIN_CHANGE`` of
``x_c``, and a bias whose ``r`` sits on ``(1 / q) Z``, which keeps every value ``1 / (2 q)``
(at least ``FINE_MARGIN``, with the allowance below) from a half-integer; such a scale counts
as settled only within ``FINE_SCALE_TOLERANCE``. (EfficientNetB0's stem, ``x_c`` 2.8e-4 to
1.8e-3, had values 1e-6 steps from a tie that Keras' float32 rounded the other way.) A
channel finer still is left as it is.

Example::

    gains, ps, qs = margin_gains([0.1317])      # 0.1317 -> 27/205: gain 1 + 5.6e-5
    units = margin_biases([0.0123 * gains[0]], [2.0e-4 * gains[0]], ps, qs, [306])   # [61.]
    # every value (27/205)(j + 61/306) is >= MARGIN int8 steps from a half-integer
"""

import numpy as np

__all__ = ["BIAS_MARGIN", "FINE_BIAS_MARGIN", "FINE_MARGIN", "FINE_SCALE_TOLERANCE", "MARGIN",
           "MAX_DENOMINATOR", "MAX_FINE_DENOMINATOR", "MAX_GAIN_CHANGE", "SCALE_TOLERANCE",
           "VALUE_REACH", "odd_fraction", "margin_bias", "margin_gains", "margin_biases",
           "scale_tolerances"]

# Distance (in int8 steps) kept between every reachable value and a rounding boundary. The
# Keras float32 value of a conv + BN output is off by about 1e-7 of it (at most 128 steps;
# measured on ResNet50: flips within 1e-5 steps of a boundary) and the file's finer-input
# factor moves it by 2**-20 of it: about 1e-4 steps at the very most.
MARGIN = 5e-4
MAX_DENOMINATOR = int(1 / (4 * MARGIN))    # 500: q * BIAS_MARGIN <= 0.38 leaves a quarter of the biases
MAX_GAIN_CHANGE = 5e-3   # largest relative change of a channel scale (1/Q near x = 1/even: 0.2%)
# A scale within this relative distance of its fraction is left as it is (a float32 variable
# holds it only to 6e-8, and a second snap must not move it again). A value v int8 steps from
# zero then sits up to |v| SCALE_TOLERANCE from where p / q puts it, so the biases keep
# MARGIN + VALUE_REACH * SCALE_TOLERANCE from the boundaries p / q defines (a projection in
# tests/keras3/test_k3_bias_lattice.py kept only 4.47e-4 steps without that allowance).
SCALE_TOLERANCE = 1e-6
VALUE_REACH = 256.0      # int8 steps a stored value can be from zero (a one-sided range)
BIAS_MARGIN = MARGIN + VALUE_REACH * SCALE_TOLERANCE
# The fine grid (module docstring): a smaller margin, still ten times the float32 error seen on
# a first layer (5e-6 steps), and a tighter settled scale (four float32 steps: a gain applied
# to a BN scale leaves it within one), so that q up to 1 / (2 FINE_BIAS_MARGIN) fits.
FINE_MARGIN = 5e-5
FINE_SCALE_TOLERANCE = 2.5e-7
FINE_BIAS_MARGIN = FINE_MARGIN + VALUE_REACH * FINE_SCALE_TOLERANCE
MAX_FINE_DENOMINATOR = int(1 / (2 * FINE_BIAS_MARGIN))    # 4385


def odd_fraction(x, max_denominator=MAX_DENOMINATOR):
    """``(p, q)`` integer arrays: per entry of ``x > 0`` the fraction ``p / q`` (``p >= 1``, odd
    ``q <= max_denominator``) nearest it; the smallest such ``q`` among equally near ones."""
    x = np.asarray(x, np.float64).reshape(-1, 1)
    denominators = np.arange(1, max_denominator + 1, 2, dtype=np.float64)
    numerators = np.maximum(1.0, np.floor(x * denominators + 0.5))
    best = np.argmin(np.abs(numerators / denominators - x), axis=1)
    rows = np.arange(x.shape[0])
    return numerators[rows, best].astype(np.int64), denominators[best].astype(np.int64)


def margin_bias(start, p, q, lattice, margin=MARGIN):
    """The integer ``B`` nearest ``start`` with ``(p B) mod L`` (centred) within
    ``(1/2 - q margin) L``: every ``(p / q)(j + B / L)`` is then ``margin`` from a half-integer.
    ``lattice`` (``L``) is an integer."""
    lattice = int(round(lattice))
    allowed = (0.5 - q * margin) * lattice
    for distance in range(lattice + 1):
        for candidate in ((start + distance, start - distance) if distance else (start,)):
            residue = (p * candidate) % lattice
            if min(residue, lattice - residue) <= allowed:
                return candidate
    raise AssertionError("a residue of 0 is always reachable")   # B = L satisfies it


def _fine_fraction(x, max_gain_change):
    """``(p, q)`` per entry of ``x``: the smallest odd ``q`` in ``(MAX_DENOMINATOR,
    MAX_FINE_DENOMINATOR]`` whose nearest ``p / q`` is within :data:`FINE_SCALE_TOLERANCE`
    of ``x`` (relative), else within ``max_gain_change``; ``q`` 0 where none is."""
    x = np.asarray(x, np.float64).reshape(-1, 1)
    denominators = np.arange(MAX_DENOMINATOR + 1 + MAX_DENOMINATOR % 2, MAX_FINE_DENOMINATOR + 1,
                             2, dtype=np.float64)
    numerators = np.maximum(1.0, np.floor(x * denominators + 0.5))
    change = np.abs(numerators / (denominators * x) - 1.0)
    close = change <= max_gain_change
    # a scale already on one of them keeps it (else the smallest q after a gain could be
    # another one, and every call would move the scale again)
    settled = change < FINE_SCALE_TOLERANCE
    first = np.where(settled.any(axis=1), np.argmax(settled, axis=1), np.argmax(close, axis=1))
    rows = np.arange(x.shape[0])
    found = close[rows, first]
    return (np.where(found, numerators[rows, first], 0).astype(np.int64),
            np.where(found, denominators[first], 0).astype(np.int64))


def margin_gains(x, max_gain_change=MAX_GAIN_CHANGE):
    """Per channel ``(gain, p, q)`` arrays for ``x`` (int8 steps per lattice step): ``gain =
    p / (q x)`` for the nearest odd ``p / q`` with ``q <= MAX_DENOMINATOR``, or else the fine
    grid's (module docstring); a channel with neither within ``max_gain_change`` gets gain 1,
    q 0."""
    x = np.asarray(x, np.float64).ravel()
    usable = np.isfinite(x) & (x > 0)
    safe = np.where(usable, x, 1.0)
    ps, qs = odd_fraction(safe)
    keep = usable & (np.abs(ps / (qs * safe) - 1.0) <= max_gain_change)
    fine = usable & ~keep
    if np.any(fine):
        ps[fine], qs[fine] = _fine_fraction(safe[fine], max_gain_change)
        keep = keep | (fine & (qs > 0))
    ps, qs = np.where(keep, ps, 0), np.where(keep, qs, 0)
    gains = np.where(keep, ps / (np.where(keep, qs, 1) * safe), 1.0)
    return gains, ps, qs


def _on_fine_grid(qs):
    """Per channel: is its denominator ``q`` one of the fine grid's (``q > MAX_DENOMINATOR``)?"""
    return np.asarray(qs) > MAX_DENOMINATOR


def scale_tolerances(qs):
    """Per channel the relative distance from its fraction within which a scale counts as
    settled: :data:`FINE_SCALE_TOLERANCE` on the fine grid, else :data:`SCALE_TOLERANCE`."""
    return np.where(_on_fine_grid(qs), FINE_SCALE_TOLERANCE, SCALE_TOLERANCE)


def margin_biases(bias, unit, ps, qs, lattice):
    """Per channel the int32 bias (in ``unit``) nearest ``bias`` that keeps the margin
    :data:`BIAS_MARGIN` (:func:`margin_bias`; ``unit``, ``bias`` after the gain), so that
    every value stays :data:`MARGIN` from a boundary with its scale up to
    :data:`SCALE_TOLERANCE` off ``p / q`` (on the fine grid: :data:`FINE_BIAS_MARGIN`,
    :data:`FINE_MARGIN`, :data:`FINE_SCALE_TOLERANCE`); NaN where ``q`` is 0."""
    result = np.full(np.shape(ps), np.nan)
    margins = np.where(_on_fine_grid(qs), FINE_BIAS_MARGIN, BIAS_MARGIN)
    for c in range(np.size(ps)):
        if qs[c] and lattice[c] < 2 ** 31:
            start = int(np.floor(bias[c] / unit[c] + 0.5))
            result[c] = margin_bias(start, int(ps[c]), int(qs[c]), lattice[c], margins[c])
    return result

"""Aligned requantization (tf_qnets.core.alignment): one int8 requantization per kernel layer
that reproduces every Keras staircase decision.

The device is emulated in integers, as TFLite computes it: the accumulator ``A`` (a multiple of
the lattice ``L``) plus the int32 bias ``B``, requantized either with one rounding (XNNPACK,
float32 scale) or with TFLite's reference fixed-point multiplier (two roundings). Keras' code
is the number of thresholds ``b_i`` with ``beta * (S A + b) > b_i``, computed in float64.
"""

import math

import numpy as np
import pytest

from tf_qnets.core.alignment import align_channels, channel_lattice, double_rounding_shift
from tf_qnets.core.levels import activation_levels


def keras_codes(acc, units, bias, beta, thresholds):
    z = units * acc + bias
    return np.sum(beta * z[..., None] > np.asarray(thresholds)[None, :], axis=-1)


def quantize_multiplier(m):
    """TFLite's QuantizeMultiplier: ``m = q * 2**(shift - 31)`` with a 31-bit ``q``."""
    fraction, shift = math.frexp(m)
    q = int(round(fraction * (1 << 31)))
    if q == 1 << 31:
        q //= 2
        shift += 1
    return q, shift


def _high_mul(a, b):
    """SaturatingRoundingDoublingHighMul (no saturation case here), C integer division."""
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    total = ab + nudge
    return total // (1 << 31) if total >= 0 else -((-total) // (1 << 31))


def _divide_by_pot(x, exponent):
    """RoundingDivideByPOT: round half away from zero."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def device_codes(acc, bias_int, multiplier, levels_top, rounding):
    """``clip(requantize(A + B), 0, top)`` with one rounding or TFLite's two."""
    x = (acc + bias_int).astype(np.int64)
    if rounding == "single":
        codes = np.floor(x * multiplier + 0.5)
    else:
        q, shift = quantize_multiplier(multiplier)
        left, right = max(shift, 0), max(-shift, 0)
        codes = np.array([_divide_by_pot(_high_mul(int(v) << left, q), right) for v in x.ravel()],
                         np.float64).reshape(x.shape)
    return np.clip(codes, 0, levels_top)


def random_layer(rng, channels, lattice_multiplier):
    """Per-channel units, biases and lattices like a trained conv after a 3-bit staircase."""
    levels = activation_levels(3)                         # 0..7
    beta = rng.uniform(1.5, 3.0)
    units = rng.uniform(2e-4, 2e-3, size=channels)
    bias = rng.normal(0.0, 0.5, size=channels)
    gcd = rng.choice([1, 1, 1, 2], size=channels)
    lattice = gcd * lattice_multiplier
    thresholds = levels.uniform_thresholds()
    return levels, beta, units, bias, lattice.astype(np.float64), thresholds


def mismatches(levels, beta, units, bias, lattice, thresholds, gain, new_bias, rounding,
               channels=None):
    """Number of lattice points (over every transition, +-3 lattice steps) coded differently
    (in ``channels``, a boolean mask; all by default)."""
    top = levels.levels[-1]
    count = 0
    for c in np.flatnonzero(np.ones(units.size, bool) if channels is None else channels):
        p = (np.asarray(thresholds) / beta - bias[c]) / units[c]
        lo, hi = np.floor(p.min() / lattice[c]) - 3, np.ceil(p.max() / lattice[c]) + 3
        acc = lattice[c] * np.arange(lo, hi + 1)
        expected = keras_codes(acc, units[c], bias[c], beta, thresholds)
        unit = units[c] * gain[c]
        bias_int = int(round(new_bias[c] / unit))
        got = device_codes(acc.astype(np.int64), bias_int, beta * unit, top, rounding)
        count += int(np.sum(got != expected))
    return count


@pytest.mark.parametrize("rounding", ["single", "double"])
def test_aligned_channels_reproduce_every_keras_code(rounding):
    rng = np.random.default_rng(0)
    layer = random_layer(rng, 48, lattice_multiplier=36)  # inputs from a 3-bit staircase (m = 36)
    plan = align_channels(*layer[2:4], layer[4], layer[1], layer[5], layer[0])
    assert plan.exact.all()
    assert mismatches(*layer[:2], *layer[2:], plan.gain, plan.bias, rounding) == 0


@pytest.mark.parametrize("rounding", ["single", "double"])
def test_exact_channels_survive_both_roundings_and_solved_ones_the_single_one(rounding):
    # Levels stored as codes (m = 1), int8 weights as 18 * level: lattice 18 units. The
    # "double" margins (lower 1/(2 mu) + eps) hold under TFLite's two roundings; the
    # channels only the "single" margins solve hold under one rounding (XNNPACK).
    rng = np.random.default_rng(3)
    layer = random_layer(rng, 64, lattice_multiplier=18)
    plan = align_channels(*layer[2:4], layer[4], layer[1], layer[5], layer[0])
    assert plan.exact.mean() > 0.5 and plan.solved.all()
    checked = plan.exact if rounding == "double" else plan.solved
    assert mismatches(*layer[:2], *layer[2:], plan.gain, plan.bias, rounding, checked) == 0


def test_double_rounding_shift_is_half_over_the_mantissa():
    # E = 0.75 * 2**-7: mantissa 0.75, shift 1 / 1.5; a mantissa at the edge: the largest shift
    np.testing.assert_allclose(double_rounding_shift([0.75 / 128, 0.5 / 64, 0.999 / 8]),
                               [2 / 3, 1.0, 1.0])


@pytest.mark.parametrize("rounding", ["single", "double"])
def test_plain_bias_rounding_flips_codes(rounding):
    # The same layers with round(b / S) as the integer bias and the trained scale: the lowering
    # before alignment. Some transitions land on the wrong side of a lattice point.
    rng = np.random.default_rng(0)
    levels, beta, units, bias, lattice, thresholds = random_layer(rng, 48, lattice_multiplier=36)
    plain_bias = np.round(bias / units) * units
    assert mismatches(levels, beta, units, bias, lattice, thresholds, np.ones_like(units),
                      plain_bias, rounding) > 0


def test_alignment_changes_weight_scales_by_well_under_one_percent():
    rng = np.random.default_rng(1)
    levels, beta, units, bias, lattice, thresholds = random_layer(rng, 64, lattice_multiplier=36)
    plan = align_channels(units, bias, lattice, beta, thresholds, levels)
    assert np.all(np.abs(plan.gain - 1.0) < 1e-2)
    # the new bias is an exact integer number of (new) accumulator units
    ratio = plan.bias / (units * plan.gain)
    np.testing.assert_allclose(ratio, np.round(ratio), atol=1e-6)


def test_a_lattice_of_one_unit_is_not_claimed_exact():
    # A first layer reading the float model input: every integer accumulator is possible, so
    # no margin fits between lattice points; the exporter then uses per-threshold copies.
    rng = np.random.default_rng(2)
    levels, beta, units, bias, lattice, thresholds = random_layer(rng, 16, lattice_multiplier=1)
    plan = align_channels(units, bias, np.ones_like(lattice), beta, thresholds, levels)
    assert not plan.exact.any()


def test_channel_lattice_is_the_input_multiplier_times_the_code_gcd():
    codes = np.zeros((3, 3, 4, 3), np.int64)
    codes[..., 0] = 2 * np.arange(36).reshape(3, 3, 4) % 8     # gcd 2
    codes[0, 0, 0, 1], codes[1, 1, 1, 1] = -3, 6               # gcd 3
    np.testing.assert_array_equal(channel_lattice(codes, 36)[:2], [72, 108])
    assert channel_lattice(codes, 36)[2] > 1e9                 # an all-zero channel

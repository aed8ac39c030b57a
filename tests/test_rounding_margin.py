"""The odd-denominator scales and biases of tf_qnets.core.rounding_margin, against brute force."""

import numpy as np
import pytest

from tf_qnets.core.rounding_margin import (
    FINE_MARGIN,
    FINE_SCALE_TOLERANCE,
    MARGIN,
    MAX_DENOMINATOR,
    MAX_FINE_DENOMINATOR,
    MAX_GAIN_CHANGE,
    SCALE_TOLERANCE,
    VALUE_REACH,
    margin_bias,
    margin_biases,
    margin_gains,
    odd_fraction,
)


def test_odd_fraction_is_the_nearest_fraction_with_an_odd_denominator():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0.01, 5, 200), [0.25, 0.5, 1.0, 1 / 6]])
    ps, qs = odd_fraction(x, max_denominator=51)
    assert np.all(qs % 2 == 1) and np.all(qs <= 51) and np.all(ps >= 1)
    for value, p, q in zip(x, ps, qs):
        best = min(abs(max(1, round(value * d)) / d - value) for d in range(1, 52, 2))
        assert abs(p / q - value) <= best + 1e-15


@pytest.mark.parametrize("x", [0.25, 0.5, 0.1317, 2.7, 0.03])
def test_every_value_of_a_margin_channel_keeps_the_margin(x):
    """(p / q)(j + B / L): with odd q and the bias margin_bias chose, no value comes nearer
    than MARGIN to a half-integer (a rounding boundary), for every lattice step j."""
    lattice = 306
    gains, ps, qs = margin_gains([x])
    assert abs(gains[0] - 1) <= MAX_GAIN_CHANGE and qs[0] % 2 == 1
    unit = x * gains[0] / lattice           # int8 steps per accumulator unit, after the gain
    for start in (0, 7, -1234, 5001):
        bias = margin_biases([start * unit], [unit], ps, qs, [lattice])[0]
        assert abs(bias - start) <= lattice
        values = (np.arange(-20000, 20001) * lattice + bias) * unit
        distance = np.abs(values - np.floor(values) - 0.5)
        assert np.min(distance) >= MARGIN * (1 - 1e-6)


def test_without_the_odd_grid_values_land_on_rounding_boundaries():
    # x = 1/4 with a bias on the lattice: every fourth value is a tie (what float32 decided
    # either way on ResNet50); the margin bias of an odd grid has none
    values = (np.arange(-100, 101) * 0.25) + 0.0
    assert np.min(np.abs(values - np.floor(values) - 0.5)) == 0.0
    assert margin_bias(0, 1, 3, 1) == 0       # (1/3) Z: at least 1/6 from every half-integer


def test_a_channel_without_a_near_fraction_is_left_as_it_is():
    gains, ps, qs = margin_gains([1e-5, np.nan, 0.0, 0.2])
    assert list(gains[:3]) == [1.0, 1.0, 1.0] and list(qs[:3]) == [0, 0, 0] and qs[3] > 0
    biases = margin_biases([0.1, 0.1, 0.1, 0.1], [0.01] * 4, ps, qs, [10] * 4)
    assert np.all(np.isnan(biases[:3])) and not np.isnan(biases[3])


def test_the_margin_bias_holds_with_the_scale_left_off_its_fraction():
    """A scale within SCALE_TOLERANCE of its fraction stays as it is; the bias still keeps every
    value within VALUE_REACH steps of zero MARGIN from a half-integer (a Keras 3 projection,
    x = 3.1898967 steps per lattice step, L = 31, kept 4.47e-4 without the allowance)."""
    x, lattice = 3.1898967108536667, 31
    gains, ps, qs = margin_gains([x])
    fraction = ps[0] / qs[0]
    rng = np.random.default_rng(0)
    for start in rng.uniform(-400, 400, 40):
        unit = 1.0
        bias = margin_biases([start], [unit], ps, qs, [lattice])[0]
        for scale in (fraction * (1 - SCALE_TOLERANCE), fraction * (1 + SCALE_TOLERANCE)):
            j = np.arange(-4000, 4001)
            values = scale * (j + bias / lattice)
            values = values[np.abs(values) <= VALUE_REACH]
            distance = np.abs(values - np.floor(values) - 0.5)
            assert distance.min() >= MARGIN * (1 - 1e-6)


@pytest.mark.parametrize("x", [2.8e-4, 4.3309e-4, 1.79e-3])
def test_a_first_layer_scale_gets_the_fine_grid_and_keeps_it(x):
    """8-bit weights on 8-bit pixels (EfficientNetB0's stem: x from 2.8e-4 to 1.8e-3 int8 steps
    per accumulator unit) have no p / q with q <= MAX_DENOMINATOR near x; the fine grid's
    odd q keeps every value within VALUE_REACH steps FINE_MARGIN from a half-integer, with the
    scale up to FINE_SCALE_TOLERANCE off its fraction, and a second call keeps the fraction."""
    gains, ps, qs = margin_gains([x])
    assert MAX_DENOMINATOR < qs[0] <= MAX_FINE_DENOMINATOR and qs[0] % 2 == 1
    assert abs(gains[0] - 1) <= MAX_GAIN_CHANGE
    rng = np.random.default_rng(1)
    for start in rng.integers(-20000, 20000, 5):
        bias = margin_biases([float(start)], [1.0], ps, qs, [1])[0]
        assert bias == start            # lattice 1: every bias is on the grid (1 / q) Z
        fraction = ps[0] / qs[0]
        for scale in (fraction * (1 - FINE_SCALE_TOLERANCE), fraction * (1 + FINE_SCALE_TOLERANCE)):
            values = scale * (np.arange(-int(VALUE_REACH / scale) - 1, int(VALUE_REACH / scale) + 2)
                              + bias)
            values = values[np.abs(values) <= VALUE_REACH]
            distance = np.abs(values - np.floor(values) - 0.5)
            assert distance.min() >= FINE_MARGIN
    again = margin_gains([x * gains[0] * (1 + 5e-8)])      # as float32 holds the new scale
    assert abs(again[0][0] - 1) < FINE_SCALE_TOLERANCE and again[2][0] == qs[0]

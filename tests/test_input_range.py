"""The model input's int8 range avoids rounding ties (tf_qnets.core.input_range)."""

import numpy as np
import pytest

from tf_qnets.core.input_range import TIE_MARGIN, tie_free_range, tie_share

PIXELS = np.arange(256, dtype=np.float64)


@pytest.mark.parametrize("lo, hi, values", [
    (-1.0, 1.0, PIXELS / 127.5 - 1.0),            # MobileNet preprocessing: every pixel a tie
    (-2.0, 2.0, PIXELS / 63.75 - 2.0),
    (-1.0, 0.0, -PIXELS[::-1] / 255.0 - 0.5 / 255),   # the far end is lo
])
def test_inputs_on_ties_get_a_slightly_wider_range_without_ties(lo, hi, values):
    assert tie_share(values, lo, hi) > 0.9
    new_lo, new_hi = tie_free_range(lo, hi, values)
    assert tie_share(values, new_lo, new_hi) <= 2 * TIE_MARGIN
    assert new_lo <= lo and new_hi >= hi                      # still covers every value
    widened = (new_hi - new_lo) / (hi - lo) - 1.0
    assert 0.0 < widened <= 0.01, widened
    far_end_moved = (new_hi != hi) if hi >= -lo else (new_lo != lo)
    assert far_end_moved


@pytest.mark.parametrize("lo, hi, values", [
    (0.0, 255.0, PIXELS),                                     # exact on the grid: scale 1
    (0.0, 1.0, PIXELS / 255.0),                               # Rescaling(1/255): exact too
    (-1.0, 1.0, np.random.default_rng(0).uniform(-1, 1, 10000)),   # continuous: few ties
    (0.0, 0.0, np.zeros(4)),                                  # an empty range stays as it is
])
def test_ranges_without_ties_are_kept(lo, hi, values):
    assert tie_free_range(lo, hi, values) == (lo, hi)


def test_tie_share_counts_values_within_the_margin_of_a_half_step():
    scale_one = (0.0, 255.0)
    assert tie_share([0.5, 1.5, 2.0, 3.25], *scale_one) == 0.5
    assert tie_share([0.5 + 1e-2], *scale_one) == 0.0
    assert tie_share([], *scale_one) == 0.0

"""The MSE-optimal scale used with thresholds="uniform" (tf_qnets.keras2.init.mse_scales)."""

import numpy as np

from tf_qnets.core.init_math import mse_scales, scales_for
from tf_qnets.core.levels import activation_levels, weight_levels


def _quantize(x, step, levels):
    y = np.asarray(levels.levels, dtype=np.float64)
    # Independent reference: nearest level, ties away from the lower one (strict ">").
    codes = np.clip(np.floor(x / step - y[0] + 0.5 + 1e-12) + y[0], y[0], y[-1])
    codes = np.where(np.isin(codes, y), codes, y[np.argmin(np.abs(x[:, None] / step - y), axis=1)])
    return step * codes


def _mse(x, step, levels):
    return float(np.mean((x - _quantize(x, step, levels)) ** 2))


def test_scale_is_as_good_as_a_brute_force_search_on_gaussian_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=20000)
    levels = weight_levels(2)
    alpha, beta = mse_scales(x, levels)
    assert np.isclose(alpha * beta, 1.0)
    grid = np.linspace(0.01, 1.25 * np.abs(x).max(), 3000)
    best = min(_mse(x, s, levels) for s in grid)
    assert _mse(x, alpha, levels) <= 1.02 * best


def test_long_tailed_activations_keep_most_values_off_the_zero_level_at_two_bits():
    rng = np.random.default_rng(1)
    x = np.maximum(rng.standard_t(3, size=50000), 0.0)
    levels = activation_levels(2)
    positive = x > 0
    alpha, _ = mse_scales(x, levels)
    max_alpha, _ = scales_for(levels, np.abs(x).max())
    zero_fraction = np.mean(_quantize(x[positive], alpha, levels) == 0)
    max_rule_zero_fraction = np.mean(_quantize(x[positive], max_alpha, levels) == 0)
    assert max_rule_zero_fraction > 0.9          # the max rule zeroes nearly everything
    assert zero_fraction < 0.6
    assert _mse(x, alpha, levels) < 0.5 * _mse(x, max_alpha, levels)


def test_an_all_zero_tensor_falls_back_to_the_max_rule():
    levels = activation_levels(3)
    assert mse_scales(np.zeros(100), levels) == scales_for(levels, 0.0)

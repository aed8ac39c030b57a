"""The calibration statistics read from the batches equal those of their concatenation
(tf_qnets.core.activation_sample)."""

import numpy as np
import pytest

from tf_qnets.core.activation_sample import ActivationSample
from tf_qnets.core.init_math import initial_scales, mse_scales
from tf_qnets.core.input_range import tie_free_output_range
from tf_qnets.core.levels import activation_levels


def _batches(seed=0, count=5):
    rng = np.random.default_rng(seed)
    return [np.maximum(rng.normal(size=(16, 9, 9, 7 + i)), 0).astype(np.float32)
            for i in range(count)]


def test_extremes_head_and_random_subset_are_those_of_the_concatenation():
    batches = _batches()
    sample = ActivationSample(batches)
    whole = np.concatenate([batch.ravel() for batch in batches])
    assert sample.size == whole.size
    assert (sample.min(), sample.max()) == (float(whole.min()), float(whole.max()))
    assert sample.max_abs() == float(np.max(np.abs(whole)))
    for count in (1, 1000, whole.size, whole.size + 5):
        np.testing.assert_array_equal(sample.head(count), whole[:count])
    np.testing.assert_array_equal(sample.random_subset(5000, seed=3),
                                  np.random.default_rng(3).choice(whole, 5000, replace=False))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_in_any_batch_is_found(bad):
    batches = _batches()
    batches[3].flat[17] = bad
    assert not ActivationSample(batches).all_finite()
    assert ActivationSample(_batches()).all_finite()


def test_the_initial_scales_and_ranges_match_the_concatenated_sample(monkeypatch):
    monkeypatch.setattr("tf_qnets.core.init_math.MAX_KMEANS_SAMPLES", 20_000)
    batches = _batches(seed=1)
    sample = ActivationSample(batches)
    whole = np.concatenate([batch.ravel() for batch in batches])
    assert whole.size > 20_000                       # the random-subset branch
    levels = activation_levels(3)
    assert mse_scales(sample, levels) == mse_scales(whole, levels)
    assert initial_scales(sample, levels, "kmeans") == initial_scales(whole, levels, "kmeans")
    products = (np.round(whole * 8) / 8).astype(np.float32)    # on a lattice: ties to avoid
    parts = np.split(products, [1000, 5000])
    assert tie_free_output_range(ActivationSample(parts)) == tie_free_output_range(products)


def test_an_empty_sample_has_no_extremes():
    with pytest.raises(ValueError, match="empty activation sample"):
        ActivationSample([np.zeros((0, 3))]).max()

"""The Keras 3 staircase against independent numpy references, under the active backend.

Values: the plain sum of method.md Sec. 1 in float64; gradients: the analytic derivatives of
Sec. 2 with the clamp and the exact/wide/smooth options (k3_reference.py).
"""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import ops

import k3_reference as ref
from k3_autodiff import value_and_gradients
from tf_qnets.core.levels import LevelSet, activation_levels, weight_levels
from tf_qnets.keras3 import staircase as k3
from tf_qnets.keras3.staircase import hard_staircase, soft_staircase

SIZE = 96
LEVEL_SETS = [
    weight_levels(1), weight_levels(2), weight_levels(3), weight_levels(4),
    activation_levels(2), activation_levels(3), activation_levels(4), activation_levels(2, signed=True),
    LevelSet((-3, 0, 1, 5)),
]
PROPERTY = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _thresholds(levels, layout, shift, scale, rng):
    """``"uniform"``: halfway between levels, shifted and scaled by dyadic numbers (so that
    the float32 thresholds are exactly evenly spaced); ``"random"``: sorted random."""
    if layout == "uniform":
        return (levels.uniform_thresholds() * scale + shift).astype("float32")
    spread = float(levels.levels[-1] - levels.levels[0])
    return np.sort(rng.uniform(-spread, spread, levels.num_steps)).astype("float32")


@st.composite
def cases(draw):
    levels = draw(st.sampled_from(LEVEL_SETS))
    layout = draw(st.sampled_from(["uniform", "random"]))
    shift = draw(st.sampled_from([0.0, 0.25, -1.5]))
    scale = draw(st.sampled_from([0.5, 1.0, 2.0]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    b = _thresholds(levels, layout, shift, scale, rng)
    alpha = np.float32(draw(st.floats(0.05, 3.0)))
    beta = np.float32(draw(st.floats(0.1, 4.0)))
    temperature = np.float32(draw(st.sampled_from([0.3, 1.0, 2.0, 5.0, 13.0, 40.0, 150.0])))
    gradient = draw(st.sampled_from(k3.GRADIENTS))
    # Inputs spread over the staircase's range, a few exactly at a threshold.
    span = (np.max(np.abs(b)) + 1.0) / beta
    x = rng.uniform(-1.3 * span, 1.3 * span, SIZE).astype("float32")
    x[:4] = (b[rng.integers(0, len(b), 4)] / beta).astype("float32")
    upstream = rng.normal(size=SIZE).astype("float32")
    return levels, b, alpha, beta, temperature, gradient, x, upstream


def _soft(levels, gradient, train_thresholds=True, hard_forward_from=None):
    def fn(x, alpha, beta, b, temperature):
        return soft_staircase(x, alpha, beta, b, temperature, levels, gradient=gradient,
                              train_thresholds=train_thresholds,
                              hard_forward_from=hard_forward_from)
    return fn


def _close(got, want, scale, rtol=2e-3):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    bound = rtol * (np.max(np.abs(want)) + scale)
    assert np.max(np.abs(got - want)) <= bound, (np.max(np.abs(got - want)), bound)


@PROPERTY
@given(cases())
def test_soft_values_and_gradients_match_the_numpy_reference(case):
    levels, b, alpha, beta, temperature, gradient, x, upstream = case
    value, (d_x, d_alpha, d_beta, d_b, d_t) = value_and_gradients(
        _soft(levels, gradient), upstream, x, alpha, beta, b, temperature,
        key=("soft", levels, gradient))
    span = alpha * (levels.levels[-1] - levels.levels[0])
    _close(value, ref.soft(x, alpha, beta, b, temperature, levels), span, rtol=1e-4)
    want = ref.gradients(x, upstream, alpha, beta, b, temperature, levels, gradient)
    _close(d_x, want[0], 1e-3)
    _close(d_alpha, want[1], 1.0)
    _close(d_beta, want[2], 1.0)
    _close(d_b, want[3], 1.0)
    assert float(d_t) == 0.0


def test_frozen_thresholds_get_a_zero_gradient():
    levels = weight_levels(3)
    b = np.array([-2.5, -1.5, -0.05, 0.05, 1.5, 2.5], "float32")
    x = np.linspace(-4, 4, SIZE).astype("float32")
    _, grads = value_and_gradients(_soft(levels, "exact", train_thresholds=False),
                                   np.ones(SIZE, "float32"), x, np.float32(1), np.float32(1), b,
                                   np.float32(3))
    assert np.all(grads[3] == 0.0)
    assert np.any(grads[0] != 0.0)


@pytest.mark.parametrize("levels", [activation_levels(2), activation_levels(4),
                                    activation_levels(8), weight_levels(4)])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 10.0, 30.0])
def test_initialised_uniform_thresholds_take_the_window_and_match_the_plain_sum(levels, temperature):
    """Evenly spaced thresholds of equal steps: the windowed form is chosen (branch > 0 when
    the window is narrower than the table) and equals the reference sum, gradients too."""
    b = levels.uniform_thresholds().astype("float32")
    n = levels.num_steps
    branch = int(ops.convert_to_numpy(k3._branch(ops.convert_to_tensor(b), levels,
                                                 ops.convert_to_tensor(np.float32(temperature)))))
    width = int(np.floor(10.0 / temperature - 0.5 + 1e-3) + 1)
    if n >= k3.UNIFORM_MIN and width <= k3._window_widths(n)[-1]:
        assert branch >= 1
        assert k3._window_widths(n)[branch - 1] >= min(width, n // 2)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.0, n + 1.0, SIZE).astype("float32")
    upstream = rng.normal(size=SIZE).astype("float32")
    for gradient in k3.GRADIENTS:
        value, grads = value_and_gradients(
            _soft(levels, gradient), upstream, x, np.float32(0.5), np.float32(1.0), b,
            np.float32(temperature), key=("soft", levels, gradient))
        _close(value, ref.soft(x, 0.5, 1.0, b, temperature, levels), 0.5 * n, rtol=1e-5)
        want = ref.gradients(x, upstream, 0.5, 1.0, b, temperature, levels, gradient)
        for got, expected in zip(grads[:4], want):
            _close(got, expected, 1e-3)


def test_window_width_does_not_grow_with_the_number_of_levels():
    """At T g = 10 the window holds 3 thresholds whether there are 15 or 255."""
    for bits in (4, 8):
        levels = activation_levels(bits)
        b = ops.convert_to_tensor(levels.uniform_thresholds().astype("float32"))
        branch = int(ops.convert_to_numpy(k3._branch(b, levels, ops.convert_to_tensor(np.float32(10.0)))))
        assert k3._window_widths(levels.num_steps)[branch - 1] == 1


@pytest.mark.parametrize("levels", [weight_levels(2), weight_levels(3), weight_levels(5),
                                    activation_levels(3), activation_levels(5), activation_levels(8),
                                    LevelSet((-3, 0, 1, 5))])
# (No threshold at 0: its upper neighbour is a denormal, which the CPU backends flush to 0.)
@pytest.mark.parametrize("scale, shift", [(1.0, 0.0), (0.37, 0.1), (2.0, -2.75)])
def test_hard_staircase_is_strict_at_every_threshold_and_its_neighbours(levels, scale, shift):
    """Evenly spaced thresholds (counted by arithmetic from 8 on) and uneven ones (table)."""
    rng = np.random.default_rng(2)
    if levels.is_uniform:
        b = (levels.uniform_thresholds() * scale + shift).astype("float32")
    else:
        b = np.sort(rng.uniform(-3, 3, levels.num_steps) * scale + shift).astype("float32")
    x = np.concatenate([b, np.nextafter(b, np.inf), np.nextafter(b, -np.inf),
                        rng.uniform(-40, 300, 64).astype("float32")]).astype("float32")
    got = ops.convert_to_numpy(hard_staircase(x, 0.25, 1.0, b, levels))
    want = ref.hard(x, 0.25, 1.0, b, levels)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert set(np.round(got / 0.25).astype(int)) <= set(levels.levels)


def _evenly_spaced_float32(first, gap, n):
    """``b_i = b_0 + i g`` in float32 with ``g = (b_{n-1} - b_0) / (n - 1)`` as the kernels
    compute it (a fixed point of that rounding), for a gap that is not a power of two."""
    b = np.float32(first) + np.arange(n, dtype="float32") * np.float32(gap)
    for _ in range(10):
        g = (b[-1] - b[0]) / np.float32(n - 1)
        again = np.float32(first) + np.arange(n, dtype="float32") * g
        if np.array_equal(again, b):
            return b
        b = again
    raise AssertionError("no fixed point")


@pytest.mark.parametrize("gap, first", [(0.37, 0.1), (0.013, -1.7), (3.3, 2.2)])
def test_hard_staircase_counts_evenly_spaced_thresholds_exactly(gap, first):
    """The arithmetic count (8-bit activations) at every threshold, its float32 neighbours and
    a dense sample, with a gap whose divisions round."""
    levels = activation_levels(8)
    b = _evenly_spaced_float32(first, gap, levels.num_steps)
    assert bool(ops.convert_to_numpy(k3._evenly_spaced(ops.convert_to_tensor(b),
                                                        levels.num_steps)))
    rng = np.random.default_rng(5)
    x = np.concatenate([b, np.nextafter(b, np.inf), np.nextafter(b, -np.inf),
                        rng.uniform(b[0] - 1, b[-1] + 1, 4000)]).astype("float32")
    got = ops.convert_to_numpy(hard_staircase(x, 1.0, 1.0, b, levels))
    np.testing.assert_array_equal(got, ref.hard(x, 1.0, 1.0, b, levels))


def test_hard_staircase_with_many_uneven_thresholds_uses_the_sorted_table():
    levels = activation_levels(8)
    rng = np.random.default_rng(3)
    b = rng.permutation(np.sort(rng.uniform(0, 255, 255))).astype("float32")   # any order
    x = np.concatenate([b, np.nextafter(b, np.inf), rng.uniform(-10, 270, 500)]).astype("float32")
    got = ops.convert_to_numpy(hard_staircase(x.reshape(-1, 5), 0.1, 1.0, b, levels))
    np.testing.assert_allclose(got.ravel(), ref.hard(x, 0.1, 1.0, b, levels), rtol=0, atol=1e-5)


@pytest.mark.parametrize("levels", [weight_levels(3), activation_levels(4)])
def test_non_finite_inputs_nan_stays_nan_and_infinities_give_the_end_levels(levels):
    b = (levels.uniform_thresholds() if levels.is_uniform else
         np.array([-2.5, -1.5, -0.05, 0.05, 1.5, 2.5])).astype("float32")
    x = np.array([np.nan, np.inf, -np.inf, 0.3], "float32")
    alpha = np.float32(0.5)
    hard = ops.convert_to_numpy(hard_staircase(x, alpha, 1.0, b, levels))
    assert np.isnan(hard[0])
    assert hard[1] == alpha * levels.levels[-1] and hard[2] == alpha * levels.levels[0]
    value, (d_x, d_alpha, d_beta, _, _) = value_and_gradients(
        _soft(levels, "exact"), np.ones(4, "float32"), x, alpha, np.float32(1.0), b,
        np.float32(5.0))
    assert np.isnan(value[0])
    np.testing.assert_allclose(value[1:3], ref.soft(x[1:3], alpha, 1.0, b, 5.0, levels), atol=1e-5)
    assert d_x[0] == 0.0 and d_x[1] == 0.0 and d_x[2] == 0.0
    assert np.isfinite(d_alpha) and np.isfinite(d_beta)


def test_hard_forward_from_switches_the_value_and_keeps_the_soft_gradient():
    levels = activation_levels(2)
    b = levels.uniform_thresholds().astype("float32")
    rng = np.random.default_rng(4)
    x = rng.uniform(-0.5, 3.5, SIZE).astype("float32")
    upstream = rng.normal(size=SIZE).astype("float32")
    fn = _soft(levels, "smooth", train_thresholds=False, hard_forward_from=100.0)
    for temperature in (50.0, 100.0, 400.0):
        value, grads = value_and_gradients(fn, upstream, x, np.float32(0.5), np.float32(1.0), b,
                                           np.float32(temperature), key=("hff", levels))
        if temperature < 100.0:
            want_value = ref.soft(x, 0.5, 1.0, b, temperature, levels)
            want_alpha = ref.gradients(x, upstream, 0.5, 1.0, b, temperature, levels, "smooth")[1]
        else:
            want_value = ref.hard(x, 0.5, 1.0, b, levels)
            want_alpha = np.sum(upstream * ref.hard(x, 1.0, 1.0, b, levels))
        _close(value, want_value, 1.0, rtol=1e-5)
        want = ref.gradients(x, upstream, 0.5, 1.0, b, temperature, levels, "smooth")
        _close(grads[0], want[0], 1e-3)
        _close(grads[2], want[2], 1.0)
        _close(grads[1], want_alpha, 1.0)


def test_bad_arguments_name_the_argument():
    x = np.zeros(3, "float32")
    with pytest.raises(ValueError, match="`gradient`"):
        soft_staircase(x, 1.0, 1.0, [0.5], 1.0, activation_levels(1), gradient="steep")
    with pytest.raises(TypeError, match="`x` must be a float"):
        hard_staircase(np.zeros(3, "int32"), 1.0, 1.0, [0.5], activation_levels(1))
    with pytest.raises(TypeError, match="LevelSet"):
        hard_staircase(x, 1.0, 1.0, [0.5], (0, 1))


def test_float16_inputs_keep_their_dtype():
    x = keras.ops.convert_to_tensor(np.linspace(-1, 4, 16), dtype="float16")
    levels = activation_levels(2)
    y = soft_staircase(x, 1.0, 1.0, levels.uniform_thresholds(), 5.0, levels)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    np.testing.assert_allclose(ops.convert_to_numpy(y).astype("float64"),
                               ref.soft(ops.convert_to_numpy(x), 1.0, 1.0,
                                        levels.uniform_thresholds(), 5.0, levels), atol=5e-3)

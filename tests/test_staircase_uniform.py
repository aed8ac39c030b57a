"""The arithmetic fast path for evenly spaced thresholds equals the plain sum.

Activations are initialised with thresholds halfway between equally spaced levels
(``b_i = b_0 + i g``); for them :func:`soft_staircase` finds the nearest threshold
by arithmetic and evaluates ``2 W + 1`` sigmoids, ``W = floor(10 / (T g) - 1/2 + 1e-3) + 1``
(0 once ``T g > 20``). These tests pin values and gradients against the numpy reference
right at the width boundaries, on thresholds, half-way between them, far outside the
range, and for non-finite inputs; and check that anything not evenly spaced takes the
general path with the same results.
"""

import numpy as np
import pytest

from tf_qnets.keras2.backend import tf
from tf_qnets.core.levels import LevelSet, activation_levels
from tf_qnets.tf.staircase import (
    SMOOTH_TEMPERATURE, UNIFORM_MAX_WIDTH, UNIFORM_MIN, _evenly_spaced, _general_variants,
    _kernel_branch, _uniform_sums, _uniform_width, soft_staircase)

from test_staircase_fast import assert_matches, numpy_reference, run_fast

LEVELS = {
    "act_2bit": activation_levels(2),
    "act_3bit": activation_levels(3),
    "act_4bit": activation_levels(4),
    "act_8bit": activation_levels(8),
    "signed_3bit": activation_levels(3, signed=True),
    "even_steps_of_2": LevelSet((-6, -4, -2, 0, 2, 4)),
}
# T * g at and around every width boundary (g = 1 for the unit-step sets): W = 0 above
# ~20, 1 down to ~6.67, 2 down to ~4, 3 down to ~2.86, 4 down to ~2.22, 5 (the smooth
# gradient's T = 2) down to ~1.82, ..., 10 down to ~0.952; below that the general path.
TEMPERATURES = (2000.0, 60.0, 20.03, 20.0, 19.99, 10.0, 6.68, 6.67, 4.01, 4.0, 2.86, 2.85,
                2.23, 2.22, 2.0, 1.82, 1.81, 1.0, 0.953, 0.95, 0.5)


def interesting_inputs(b, levels):
    """On every threshold, half-way between, just either side, far out, and random."""
    gap = (b[-1] - b[0]) / max(len(b) - 1, 1)
    near = np.concatenate([b, b + gap / 2, b - gap / 2, b + 1e-3, b - 1e-3,
                           b + 10 / 20.0, b - 10 / 20.0, b + 1.0, b - 1.0])
    far = np.array([levels.levels[0] - 50.0, levels.levels[-1] + 50.0, 0.0])
    rng = np.random.default_rng(len(b))
    return np.concatenate([near, far, rng.uniform(b[0] - 3, b[-1] + 3, 200)])


@pytest.mark.parametrize("name", sorted(LEVELS))
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_uniform_path_equals_plain_sum_at_every_width_boundary(name, dtype):
    dtype = {"f32": tf.float32, "f64": tf.float64}[dtype]
    levels = LEVELS[name]
    b = levels.uniform_thresholds()
    x = interesting_inputs(b, levels)
    alpha, beta = 0.7, 1.0        # beta = 1: the inputs above sit exactly where intended
    if dtype == tf.float32:
        x = np.float64(np.float32(x))
    for temperature in TEMPERATURES:
        got = run_fast(x, alpha, beta, b, temperature, levels, dtype, "xla")
        want = numpy_reference(x, alpha, beta, b, temperature, levels,
                               dtype=dtype.as_numpy_dtype)
        assert_matches(got, want, dtype, f"{name} T={temperature}")


@pytest.mark.parametrize("name", ["act_3bit", "act_8bit"])
def test_uniform_kernel_of_each_width_equals_plain_sum(name):
    """Each static-width kernel directly (not via the dispatch), where its width applies."""
    levels = LEVELS[name]
    b = tf.constant(levels.uniform_thresholds(), tf.float64)
    x = interesting_inputs(levels.uniform_thresholds(), levels)
    for temperature in (2000.0, 25.0, 20.0, 12.0, 10.0, 7.0, 5.0, 3.0, 2.0, 1.5, 1.0):
        width = int(_uniform_width(b, levels.num_steps, tf.constant(temperature, tf.float64)))
        assert width <= UNIFORM_MAX_WIDTH
        t = tf.constant(temperature, tf.float64)
        codes, slope = _uniform_sums(tf.constant(x), b, levels, t, t, True, True, width)
        want = numpy_reference(x, 1.0, 1.0, b.numpy(), temperature, levels)
        np.testing.assert_allclose(codes.numpy() - levels.offset, want[0], atol=1e-12,
                                   err_msg=f"codes, T={temperature}, W={width}")
        np.testing.assert_allclose(temperature * slope.numpy(), want[1], atol=1e-12,
                                   err_msg=f"slope, T={temperature}, W={width}")


@pytest.mark.parametrize("bits", range(1, 9))
def test_default_activation_quantizers_take_the_fast_path(bits):
    """Initial thresholds at every activation bit width, at every temperature a schedule
    reaches (from the initial T = 1 up) and at the smooth backward's ``min(T, 2)``: the
    uniform kernel; 1-bit activations (one threshold) sum their single sigmoid directly."""
    levels = activation_levels(bits)
    b = tf.constant(levels.uniform_thresholds(), tf.float32)
    for temperature in (1.0, SMOOTH_TEMPERATURE, 5.0, 10.0, 50.0, 100.0, 2000.0):
        branch = int(_kernel_branch(b, levels, tf.constant(temperature)))
        if levels.num_steps < UNIFORM_MIN:
            assert levels.num_steps == 1 and branch == 0
        else:
            uniform_from = _general_variants(levels.num_steps)
            assert branch >= uniform_from, f"A{bits} at T={temperature} takes the general path"


def test_width_formula_and_even_spacing_check():
    levels = activation_levels(3)
    b = tf.constant(levels.uniform_thresholds(), tf.float32)
    temperatures = (30.0, 20.0, 10.0, 7.0, 5.0, 3.0, 2.0)
    widths = {t: int(_uniform_width(b, 7, tf.constant(t))) for t in temperatures}
    assert widths == {30.0: 0, 20.0: 1, 10.0: 1, 7.0: 1, 5.0: 2, 3.0: 3, 2.0: 5}
    assert bool(_evenly_spaced(b, 7))
    assert not bool(_evenly_spaced(tf.reverse(b, [0]), 7))            # descending
    assert not bool(_evenly_spaced(tf.tensor_scatter_nd_add(b, [[3]], [1e-3]), 7))
    assert not bool(_evenly_spaced(tf.zeros([7]), 7))                 # all equal


@pytest.mark.parametrize("perturb", ["one_moved", "shuffled", "all_equal"])
def test_thresholds_not_evenly_spaced_take_the_general_path(perturb):
    levels = activation_levels(4)
    b = levels.uniform_thresholds().copy()
    if perturb == "one_moved":
        b[5] += 0.3
    elif perturb == "shuffled":
        np.random.default_rng(0).shuffle(b)
    else:
        b[:] = 3.25
    x = interesting_inputs(levels.uniform_thresholds(), levels)
    for temperature in (60.0, 10.0, 1.0):
        got = run_fast(x, 1.3, 0.8, b, temperature, levels, tf.float64, "xla")
        assert_matches(got, numpy_reference(x, 1.3, 0.8, b, temperature, levels), tf.float64,
                       f"{perturb} T={temperature}")


def test_non_finite_inputs_on_the_uniform_path():
    levels = activation_levels(8)
    b = levels.uniform_thresholds()
    for temperature in (10.0, 100.0):
        y = soft_staircase(tf.constant([np.nan, 3.0]), 1.0, 1.0, b, temperature, levels).numpy()
        assert np.isnan(y[0]) and np.isfinite(y[1])
        x = tf.constant([np.inf, -np.inf, 3.0], tf.float32)
        alpha, beta = tf.Variable(0.5), tf.Variable(1.0)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = soft_staircase(x, alpha, beta, b, temperature, levels)
        d_x, d_alpha, d_beta = tape.gradient(y, [x, alpha, beta])
        y = y.numpy()
        np.testing.assert_allclose(y[0], 0.5 * 255 / (1 + np.exp(-10.0)), rtol=1e-5)
        np.testing.assert_allclose(y[1], 0.5 * 255 / (1 + np.exp(10.0)), rtol=1e-5)
        assert d_x.numpy()[0] == 0.0 and d_x.numpy()[1] == 0.0
        assert np.isfinite(float(d_beta)) and np.isfinite(float(d_alpha))

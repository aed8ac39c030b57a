"""Property-based tests of the staircase (issue 7, requirement 1), with hypothesis.

Random level sets (sorted distinct integers, small sets summed directly and sets of more
than 16 levels that take the windowed path), sorted thresholds, positive scales,
temperatures from 0.1 to 1e4, and float32 inputs that include zeros, signed zeros,
denormals, the largest finite floats and +-inf. Expected values come from numpy.

NaN and Inf are defined, documented results (see ``test_nan_propagates...`` and
``test_infinities_saturate...``): NaN in gives NaN out, elementwise, in both forms, so
the loss shows it instead of a silently wrong number; +-inf saturate to the top /
bottom level (hard) or to the clamped ends (soft) and get a zero input gradient.

``MAX_EXAMPLES`` below sums to the number of examples run in CI.
"""

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import tf_qnets  # noqa: E402,F401
from tf_qnets.keras2.backend import tf  # noqa: E402
from tf_qnets.core.levels import LevelSet  # noqa: E402
from tf_qnets.tf.staircase import hard_staircase, soft_staircase  # noqa: E402

MAX_EXAMPLES = {
    "hard_levels": 25,
    "hard_monotone": 15,
    "soft_bounds": 15,
    "soft_to_hard": 15,
    "gradients": 15,
    "nan_inf": 10,
    "xla_graph": 6,
}
SIG_LO = 1.0 / (1.0 + math.exp(10.0))  # sigmoid(-10): the clamp's margin per step
F32_MAX = float(np.finfo(np.float32).max)
SPECIAL = [0.0, -0.0, 1e-45, -1e-45, 1e-40, -3e-39, 1e-30, F32_MAX, -F32_MAX, 3e37, -1e20]


def _settings(name):
    return settings(max_examples=MAX_EXAMPLES[name], deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def level_sets(draw):
    """Small sets (<= 16 levels, summed directly) and large ones (windowed path)."""
    large = draw(st.booleans())
    size = draw(st.integers(17, 28) if large else st.integers(2, 12))
    low, high = (-128, 127) if large else (-20, 20)
    values = draw(st.lists(st.integers(low, high), min_size=size, max_size=size, unique=True))
    return LevelSet(tuple(sorted(values)))


@st.composite
def staircases(draw):
    """``(levels, thresholds, alpha, beta)``; thresholds sorted, distinct in float32."""
    levels = draw(level_sets())
    n = levels.num_steps
    raw = draw(st.lists(st.floats(-60.0, 60.0, width=32), min_size=n, max_size=n,
                        unique=True))
    thresholds = np.sort(np.asarray(raw, np.float32))
    alpha = draw(st.floats(2.0**-10, 1024.0, width=32))
    beta = draw(st.floats(2.0**-10, 1024.0, width=32))
    return levels, thresholds, np.float32(alpha), np.float32(beta)


def inputs(allow_infinity=True, max_size=24):
    """float32 vectors mixing ordinary values, huge magnitudes, zeros and denormals."""
    elements = st.one_of(
        st.floats(-100.0, 100.0, width=32),
        st.floats(width=32, allow_nan=False, allow_infinity=allow_infinity),
        st.sampled_from(SPECIAL),
    )
    return hnp.arrays(np.float32, st.integers(1, max_size), elements=elements)


temperatures = st.floats(0.125, 1e4, width=32)


def flush_denormals(a):
    """TensorFlow's CPU kernels run with flush-to-zero: subnormal float32 values act as 0."""
    a = np.asarray(a, np.float32).copy()
    a[np.abs(a) < np.finfo(np.float32).tiny] = 0.0
    return a


def numpy_hard(x, alpha, beta, thresholds, levels):
    """Independent reference: ``alpha * y_j``, ``j`` = #thresholds strictly below beta * x
    (computed in float32, subnormals flushed to zero as TensorFlow's CPU kernels do)."""
    u = flush_denormals(np.float32(beta) * flush_denormals(x))   # a subnormal product too
    j = np.sum(u[:, None] > flush_denormals(thresholds)[None, :], axis=1)
    y = np.asarray(levels.levels, np.float32)[j]
    return (np.float32(alpha) * y).astype(np.float32)


def soft(x, levels, thresholds, alpha, beta, temperature, implementation="graph"):
    return soft_staircase(tf.constant(x), alpha, beta, thresholds, temperature, levels,
                          implementation=implementation).numpy()


# --- hard staircase --------------------------------------------------------------------------

@_settings("hard_levels")
@given(staircases(), inputs())
def test_hard_outputs_are_alpha_times_a_level_and_match_numpy(stair, x):
    levels, thresholds, alpha, beta = stair
    y = hard_staircase(tf.constant(x), alpha, beta, thresholds, levels).numpy()
    allowed = (np.float32(alpha) * np.asarray(levels.levels, np.float32)).astype(np.float32)
    assert np.isin(y, allowed).all(), (y, allowed)
    np.testing.assert_array_equal(y, numpy_hard(x, alpha, beta, thresholds, levels))


@_settings("hard_monotone")
@given(staircases(), inputs(max_size=40))
def test_hard_staircase_is_non_decreasing_in_x(stair, x):
    levels, thresholds, alpha, beta = stair
    x = np.sort(x)
    y = hard_staircase(tf.constant(x), alpha, beta, thresholds, levels).numpy()
    assert np.all(np.diff(y) >= 0), (x, y)
    assert y[0] >= alpha * levels.levels[0] and y[-1] <= alpha * levels.levels[-1]


# --- soft staircase --------------------------------------------------------------------------

@_settings("soft_bounds")
@given(staircases(), inputs(), temperatures)
def test_soft_output_lies_between_the_clamped_ends(stair, x, temperature):
    """``alpha (y_0 + span sigma(-10)) <= soft <= alpha (y_n - span sigma(-10))``."""
    levels, thresholds, alpha, beta = stair
    y = soft(x, levels, thresholds, alpha, beta, temperature).astype(np.float64)
    span = levels.levels[-1] - levels.levels[0]
    tol = 1e-5 * alpha * (span + max(abs(v) for v in levels.levels))
    lower = alpha * (levels.levels[0] + span * SIG_LO)
    upper = alpha * (levels.levels[-1] - span * SIG_LO)
    assert np.isfinite(y).all()
    assert np.all(y >= lower - tol) and np.all(y <= upper + tol), (y.min(), y.max(), lower, upper)


@_settings("soft_to_hard")
@given(staircases(), inputs(), temperatures)
def test_soft_approaches_hard_as_temperature_grows(stair, x, temperature):
    """Once every threshold is at least ``delta`` away from ``beta x``, any T >= 20 / delta
    clamps every sigmoid: |soft - hard| is at most the clamp margin ``alpha span sigma(-10)``."""
    levels, thresholds, alpha, beta = stair
    hard = numpy_hard(x, alpha, beta, thresholds, levels).astype(np.float64)
    span = levels.levels[-1] - levels.levels[0]
    tol = 2e-5 * alpha * (span + max(abs(v) for v in levels.levels))
    u = flush_denormals(np.float32(beta) * flush_denormals(x))
    distance = np.min(np.abs(u[:, None].astype(np.float64) - flush_denormals(thresholds)), axis=1)
    far = distance >= 1e-2
    assume(far.any())
    for large_t in (20.0 / 1e-2, max(temperature, 20.0 / 1e-2) * 10.0):
        error = np.abs(soft(x[far], levels, thresholds, alpha, beta, large_t) - hard[far])
        assert np.all(error <= alpha * span * SIG_LO + tol), (error.max(), alpha * span * SIG_LO)


@_settings("gradients")
@given(staircases(), inputs(allow_infinity=False), temperatures, st.sampled_from(["exact", "wide"]))
def test_gradients_are_finite_for_finite_inputs(stair, x, temperature, gradient):
    levels, thresholds, alpha, beta = stair
    variables = [tf.constant(x), tf.constant(alpha), tf.constant(beta), tf.constant(thresholds)]
    with tf.GradientTape() as tape:
        tape.watch(variables)
        y = soft_staircase(*variables[:4], temperature, levels, gradient=gradient,
                           train_thresholds=True, implementation="graph")
        loss = tf.reduce_sum(y * tf.linspace(-1.0, 1.0, tf.size(y)))
    grads = tape.gradient(loss, variables)
    for name, g in zip(("x", "alpha", "beta", "thresholds"), grads):
        assert np.isfinite(g.numpy()).all(), (name, g.numpy())


# --- NaN and Inf -----------------------------------------------------------------------------

@_settings("nan_inf")
@given(staircases(), inputs(allow_infinity=False, max_size=8), temperatures)
def test_nan_propagates_elementwise_and_infinities_saturate(stair, x, temperature):
    """The documented contract: NaN -> NaN (both forms, only that element);
    +inf -> top level, -inf -> bottom level (hard) / the clamped ends (soft)."""
    levels, thresholds, alpha, beta = stair
    bad = np.concatenate([x, np.array([np.nan, np.inf, -np.inf], np.float32)])
    hard = hard_staircase(tf.constant(bad), alpha, beta, thresholds, levels).numpy()
    soft_y = soft(bad, levels, thresholds, alpha, beta, temperature)
    for y in (hard, soft_y):
        assert np.isnan(y[-3]) and np.isfinite(y[:-3]).all() and np.isfinite(y[-2:]).all()
    np.testing.assert_array_equal(hard[:-3], numpy_hard(x, alpha, beta, thresholds, levels))
    assert hard[-2] == np.float32(alpha) * levels.levels[-1]
    assert hard[-1] == np.float32(alpha) * levels.levels[0]
    span = levels.levels[-1] - levels.levels[0]
    tol = 1e-5 * alpha * (span + max(abs(v) for v in levels.levels))
    np.testing.assert_allclose(soft_y[-2], alpha * (levels.levels[-1] - span * SIG_LO), atol=tol)
    np.testing.assert_allclose(soft_y[-1], alpha * (levels.levels[0] + span * SIG_LO), atol=tol)

    # The input gradient of an infinite (saturated) element is zero, of a NaN element zero too;
    # the finite elements' gradients are unchanged by the bad ones.
    def input_gradient(values):
        tensor = tf.constant(values)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            y = soft_staircase(tensor, alpha, beta, thresholds, temperature, levels,
                               implementation="graph")
        return tape.gradient(y, tensor).numpy()

    with_bad, clean = input_gradient(bad), input_gradient(x)
    np.testing.assert_array_equal(with_bad[-3:], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(with_bad[:-3], clean, rtol=1e-6, atol=0)


@_settings("xla_graph")
@given(st.sampled_from([(-1, 1), (-4, -2, -1, 0, 1, 2, 4), tuple(range(0, 32))]),
       hnp.arrays(np.float32, 16, elements=st.floats(width=32, allow_nan=False)), temperatures)
def test_xla_and_graph_implementations_agree(levels, x, temperature):
    levels = LevelSet(levels)
    thresholds = levels.uniform_thresholds().astype(np.float32)
    a = soft(x, levels, thresholds, 0.5, 1.5, temperature, implementation="xla")
    b = soft(x, levels, thresholds, 0.5, 1.5, temperature, implementation="graph")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * len(levels))


def test_the_ci_example_budget():
    """The closing note of issue 7 quotes this number."""
    assert sum(MAX_EXAMPLES.values()) == 101

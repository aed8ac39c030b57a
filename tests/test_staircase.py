"""The staircase (method.md Sec. 1-2) against an independent NumPy implementation.

The reference below is written from method.md only:

    soft:  y = alpha * ( sum_i s_i * sigmoid(clip(T (beta x - b_i), -10, 10)) - o )
    hard:  y = alpha * ( sum_i s_i * [beta x > b_i] - o )

with s_i = y_i - y_{i-1} and o = -y_0. Gradients of the soft form are checked against
central finite differences in float64; the "wide" backward against its formula.
"""

import numpy as np
import pytest

from tf_qnets.keras2.backend import tf
from tf_qnets.core.levels import LevelSet, activation_levels, weight_levels
from tf_qnets.tf.staircase import (
    _evenly_spaced,
    hard_staircase,
    hard_staircase_compiled,
    soft_staircase,
    soft_staircase_reference,
)

CLAMP = 10.0


# --- independent NumPy reference ------------------------------------------------------------

def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_steps_offset(levels):
    y = np.asarray(levels, dtype=np.float64)
    return np.diff(y), -y[0]


def np_soft(x, alpha, beta, b, T, levels):
    s, o = np_steps_offset(levels)
    x = np.asarray(x, np.float64)
    out = np.zeros_like(x)
    for s_i, b_i in zip(s, np.asarray(b, np.float64)):
        out += s_i * np_sigmoid(np.clip(T * (beta * x - b_i), -CLAMP, CLAMP))
    return alpha * (out - o)


def np_hard(x, alpha, beta, b, levels):
    s, o = np_steps_offset(levels)
    x = np.asarray(x, np.float64)
    out = np.zeros_like(x)
    for s_i, b_i in zip(s, np.asarray(b, np.float64)):
        out += s_i * (beta * x > b_i)
    return alpha * (out - o)


def np_wide_dx(x, alpha, beta, b, T, levels):
    """The authors' binary-weight backward: sigmoid derivative at T=1 (clamped), times T."""
    s, _ = np_steps_offset(levels)
    total = np.zeros_like(x)
    for s_i, b_i in zip(s, b):
        z = beta * x - b_i
        sig = np_sigmoid(np.clip(z, -CLAMP, CLAMP))
        total += np.where(np.abs(z) <= CLAMP, s_i * sig * (1 - sig), 0.0)
    return alpha * beta * T * total


CASES = {
    "binary": ((-1, 1), [0.0]),
    "ternary": ((-1, 0, 1), [-0.05, 0.05]),
    "pow2_3bit": ((-4, -2, -1, 0, 1, 2, 4), [-3.1, -1.4, -0.05, 0.05, 1.6, 2.9]),
    "act_3bit": (tuple(range(8)), [0.4, 1.3, 2.6, 3.5, 4.4, 5.6, 6.5]),
    "custom": ((-3, 0, 2, 7), [-1.2, 0.8, 4.1]),
}


def _inputs(rng, shape, scale=2.5):
    return rng.normal(scale=scale, size=shape)


# --- forward values --------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("T", [0.5, 3.0, 40.0])
def test_soft_staircase_matches_numpy_reference(name, T, rng):
    levels, b = CASES[name]
    x = _inputs(rng, (6, 7)).astype(np.float32)
    alpha, beta = 0.37, 1.3
    got = soft_staircase(tf.constant(x), alpha, beta, b, T, LevelSet(levels)).numpy()
    want = np_soft(x, alpha, beta, b, T, levels)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * alpha * (levels[-1] - levels[0]))


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_soft_staircase_matches_numpy(name, rng):
    levels, b = CASES[name]
    x = _inputs(rng, (50,))
    got = soft_staircase_reference(tf.constant(x), 0.8, 0.9, b, 7.0, LevelSet(levels)).numpy()
    np.testing.assert_allclose(got, np_soft(x, 0.8, 0.9, b, 7.0, levels), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES) + ["act_4bit_uniform"])
@pytest.mark.parametrize("hard", [hard_staircase, hard_staircase_compiled])
def test_hard_staircase_matches_numpy_reference(name, hard, rng):
    if name == "act_4bit_uniform":   # evenly spaced: the arithmetic count
        levels = tuple(range(16))
        b = list(np.arange(15) + 0.5)
    else:
        levels, b = CASES[name]
    x = _inputs(rng, (4, 5, 6), scale=2.5 if levels[-1] < 10 else 8.0).astype(np.float32)
    x.flat[:3] = [np.inf, -np.inf, np.nan]
    got = hard(tf.constant(x), 0.25, 1.5, b, LevelSet(levels)).numpy()
    # beta * x in float32, as the implementation computes it, decides the comparisons.
    want = np.where(np.isnan(x), np.nan, np_hard(np.float32(1.5) * x, 0.25, 1.0, b, levels))
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=0)


@pytest.mark.parametrize("shape", [(3, 7), (5, 100, 300), (2, 1 << 20), (2, 1100, 1000)])
def test_compiled_hard_staircase_is_exact_across_its_flat_buckets(shape, rng):
    """Eager calls up to ``HARD_BUCKETS[-1]`` elements run padded to a bucket size (one XLA
    program per bucket, not per shape), the last two shapes as they are; the padding changes
    no value."""
    from tf_qnets.tf.staircase import HARD_BUCKETS

    levels = activation_levels(4)
    b = levels.uniform_thresholds()
    x = rng.uniform(-2, 18, size=shape).astype(np.float32)
    x.flat[-2:] = [np.nan, np.inf]
    got = hard_staircase_compiled(tf.constant(x), 0.5, 1.0, b, levels).numpy()
    assert got.shape == shape
    want = np.where(np.isnan(x), np.nan, np_hard(x, 0.5, 1.0, b, levels.levels))
    np.testing.assert_array_equal(got, want)


def test_eight_bit_activation_staircase_matches_numpy(rng):
    levels = activation_levels(8)
    b = levels.uniform_thresholds()
    x = rng.uniform(-5, 270, size=(300,)).astype(np.float32)
    for T in (0.3, 2.0, 25.0):
        got = soft_staircase(tf.constant(x), 0.02, 1.0, b, T, levels).numpy()
        np.testing.assert_allclose(got, np_soft(x, 0.02, 1.0, b, T, levels.levels),
                                   rtol=0, atol=2e-4)
    got = hard_staircase(tf.constant(x), 0.02, 1.0, b, levels).numpy()
    np.testing.assert_allclose(got, np_hard(x, 0.02, 1.0, b, levels.levels), rtol=1e-6)


def test_thresholds_in_any_order_pair_with_their_own_step_heights(rng):
    # sum_i s_i sigmoid(T (beta x - b_i)) does not depend on the order in which the pairs are listed
    levels = LevelSet((0, 1, 3, 4))          # s = (1, 2, 1)
    b = np.array([2.0, 0.5, 3.5])            # b_1 = 2.0 goes with s_1 = 1, b_2 = 0.5 with s_2 = 2
    x = rng.uniform(-1, 5, size=(60,)).astype(np.float32)
    got = soft_staircase(tf.constant(x), 1.0, 1.0, b, 4.0, levels).numpy()
    np.testing.assert_allclose(got, np_soft(x, 1.0, 1.0, b, 4.0, levels.levels), atol=3e-5)
    got = hard_staircase(tf.constant(x), 1.0, 1.0, b, levels).numpy()
    np.testing.assert_allclose(got, np_hard(x, 1.0, 1.0, b, levels.levels))


def test_hard_outputs_are_always_alpha_times_a_level(rng):
    for levels, b in CASES.values():
        alpha = 0.173
        x = np.concatenate([_inputs(rng, (500,), scale=6.0), [-1e30, 1e30, 0.0]]).astype(np.float32)
        got = hard_staircase(tf.constant(x), alpha, 0.7, b, LevelSet(levels)).numpy()
        codes = got / np.float32(alpha)
        distance = np.min(np.abs(codes[:, None] - np.asarray(levels)[None, :]), axis=1)
        assert np.max(distance) < 1e-5
        assert set(np.round(codes).astype(int)) <= set(levels)


def test_hard_staircase_uses_strict_greater_at_exact_thresholds():
    levels = weight_levels(2)
    b = [-0.5, 0.5]
    # beta = 2: beta * x hits the thresholds exactly (all values exact in binary floating point).
    x = tf.constant([-0.25, -0.2499, 0.25, 0.2501], tf.float32)
    got = hard_staircase(x, 1.0, 2.0, b, levels).numpy()
    np.testing.assert_array_equal(got, [-1.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("gap", [1.0, 0.75, 0.91])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_evenly_spaced_thresholds_count_exactly_like_the_table(bits, gap):
    """The arithmetic count for evenly spaced thresholds (as initialised) equals the strict
    comparison with every threshold: at each threshold, one float32 step on either side,
    far away, at +-inf and NaN."""
    levels = activation_levels(bits)
    n = levels.num_steps
    b = (np.float32(0.5) + np.arange(n, dtype=np.float32) * np.float32(gap)).astype(np.float32)
    assert bool(_evenly_spaced(tf.constant(b), n))     # the arithmetic path is the one tested
    u = np.concatenate([b, np.nextafter(b, np.float32(np.inf)), np.nextafter(b, np.float32(-np.inf)),
                        np.float32([-1e30, 1e30, np.inf, -np.inf, 0.0]),
                        np.random.default_rng(0).uniform(b[0] - 2 * gap, b[-1] + 2 * gap, 4096)
                        .astype(np.float32)])
    got = hard_staircase(tf.constant(u), 1.0, 1.0, tf.constant(b), levels).numpy()
    expected = np.asarray(levels.levels, np.float32)[np.sum(u[:, None] > b[None, :], axis=1)]
    np.testing.assert_array_equal(got, expected)
    nan = hard_staircase(tf.constant([np.nan], tf.float32), 1.0, 1.0, tf.constant(b), levels)
    assert np.isnan(nan.numpy()).all()


def test_binary_hard_staircase_maps_zero_to_minus_one():
    got = hard_staircase(tf.constant([0.0, 1e-7, -1e-7]), 1.0, 1.0, [0.0], weight_levels(1)).numpy()
    np.testing.assert_array_equal(got, [-1.0, 1.0, -1.0])


def test_soft_approaches_hard_as_temperature_grows(rng):
    levels, b = CASES["pow2_3bit"]
    x = _inputs(rng, (2000,))
    # keep only inputs at least 0.05 away from every threshold (beta = 1)
    x = x[np.min(np.abs(x[:, None] - np.asarray(b)[None, :]), axis=1) > 0.05].astype(np.float32)
    hard = hard_staircase(tf.constant(x), 0.5, 1.0, b, LevelSet(levels)).numpy()
    errors = []
    for T in (1.0, 10.0, 100.0, 1000.0):
        soft = soft_staircase(tf.constant(x), 0.5, 1.0, b, T, LevelSet(levels)).numpy()
        errors.append(np.max(np.abs(soft - hard)))
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    # at T = 1000 every sigmoid is clamped: the residual is sum(s) * sigmoid(-10) * alpha
    assert errors[-1] <= 0.5 * 8 * np_sigmoid(-CLAMP) + 1e-6


@pytest.mark.parametrize("shape", [(), (7,), (3, 4), (2, 3, 4), (2, 3, 4, 5)])
def test_outputs_keep_the_input_shape(shape, rng):
    levels, b = CASES["pow2_3bit"]
    x = tf.constant(_inputs(rng, shape).astype(np.float32))
    assert soft_staircase(x, 1.0, 1.0, b, 5.0, LevelSet(levels)).shape == x.shape
    assert hard_staircase(x, 1.0, 1.0, b, LevelSet(levels)).shape == x.shape


def _max_rank_in_graph(graph):
    """Largest tensor rank in a graph and in every function it calls (loops, gradients)."""
    ranks = [0]
    for op in graph.get_operations():
        for tensor in op.outputs:
            if tensor.shape.rank is not None:
                ranks.append(tensor.shape.rank)
    library = graph.as_graph_def().library
    for function in library.function:
        for attr in function.arg_attr.values():
            shapes = attr.attr.get("_output_shapes")
            if shapes is not None:
                ranks.extend(len(shape.dim) for shape in shapes.list.shape if not shape.unknown_rank)
    return max(ranks)


def test_no_tensor_gets_a_higher_rank_than_the_input(rng):
    # A 5-D broadcast x[..., None] - b broke TFLite conversion (DESIGN.md).
    levels, b = CASES["pow2_3bit"]
    x = tf.constant(_inputs(rng, (2, 3, 4, 5)).astype(np.float32))

    @tf.function(autograph=False)
    def forward_and_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = soft_staircase(x, 1.0, 1.0, b, 5.0, LevelSet(levels))
        return y, tape.gradient(y, x), hard_staircase(x, 1.0, 1.0, b, LevelSet(levels))

    graph = forward_and_backward.get_concrete_function(x).graph
    assert _max_rank_in_graph(graph) <= 4


def test_float64_inputs_work_inside_tf_function(rng):
    levels, b = CASES["pow2_3bit"]
    x = tf.constant(_inputs(rng, (10,)))

    @tf.function(autograph=False)
    def both(x):
        return (soft_staircase(x, 0.5, 1.0, b, 5.0, LevelSet(levels)),
                hard_staircase(x, 0.5, 1.0, b, LevelSet(levels)))

    soft, hard = both(x)
    assert soft.dtype == tf.float64 and hard.dtype == tf.float64
    np.testing.assert_allclose(soft.numpy(), np_soft(x.numpy(), 0.5, 1.0, b, 5.0, levels), atol=1e-9)


def test_nan_propagates_through_the_hard_staircase():
    got = hard_staircase(tf.constant([np.nan, 1.0]), 1.0, 1.0, [0.0], weight_levels(1)).numpy()
    assert np.isnan(got[0]) and got[1] == 1.0


def test_unknown_gradient_option_is_rejected():
    with pytest.raises(ValueError, match="`gradient` must be one of"):
        soft_staircase(tf.constant([0.0]), 1.0, 1.0, [0.0], 1.0, weight_levels(1), gradient="ste")


# --- gradients (float64, central finite differences) ----------------------------------------

def _soft64(x, alpha, beta, b, T, levels, **kwargs):
    return soft_staircase(x, alpha, beta, b, T, LevelSet(levels), **kwargs)


def _finite_difference(f, value, h=1e-6):
    """Central differences of a scalar function f of a float64 array, elementwise."""
    value = np.array(value, dtype=np.float64)
    grad = np.zeros_like(value)
    for index in np.ndindex(value.shape):
        up, down = value.copy(), value.copy()
        up[index] += h
        down[index] -= h
        grad[index] = (f(up) - f(down)) / (2 * h)
    return grad


def _away_from_clamp_kinks(x, beta, b, T, margin=0.2):
    """Drop inputs whose sigmoid argument is near the +-10 clamp (the soft form has kinks there)."""
    z = T * (beta * x[:, None] - np.asarray(b)[None, :])
    return x[np.all(np.abs(np.abs(z) - CLAMP) > margin, axis=1)]


GRAD_CASES = [("ternary", 2.0), ("pow2_3bit", 1.5), ("act_3bit", 4.0), ("custom", 0.7),
              ("binary", 3.0)]


@pytest.mark.parametrize("name,T", GRAD_CASES)
def test_gradients_match_finite_differences(name, T, rng):
    levels, b = CASES[name]
    alpha, beta = 0.6, 1.1
    x = _away_from_clamp_kinks(_inputs(rng, (40,)), beta, b, T)
    upstream = rng.normal(size=x.shape)
    b = np.asarray(b, np.float64)

    def loss(x_, alpha_, beta_, b_):
        y = _soft64(tf.constant(x_), tf.constant(alpha_, tf.float64),
                    tf.constant(beta_, tf.float64), tf.constant(b_), T, levels)
        return float(np.sum(upstream * y.numpy()))

    variables = [tf.constant(x), tf.constant(alpha, tf.float64), tf.constant(beta, tf.float64),
                 tf.constant(b)]
    with tf.GradientTape() as tape:
        tape.watch(variables)
        y = _soft64(*variables[:3], variables[3], T, levels, train_thresholds=True)
        total = tf.reduce_sum(upstream * y)
    d_x, d_alpha, d_beta, d_b = [g.numpy() for g in tape.gradient(total, variables)]

    tol = dict(rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d_x, _finite_difference(lambda v: loss(v, alpha, beta, b), x), **tol)
    np.testing.assert_allclose(d_alpha, _finite_difference(lambda v: loss(x, v, beta, b), alpha), **tol)
    np.testing.assert_allclose(d_beta, _finite_difference(lambda v: loss(x, alpha, v, b), beta), **tol)
    np.testing.assert_allclose(d_b, _finite_difference(lambda v: loss(x, alpha, beta, v), b), **tol)


def test_gradients_match_method_md_formulas(rng):
    # dy/dx = alpha beta T sum s_i d_i ; dy/dbeta = alpha x T sum s_i d_i ; dy/dalpha = sum s_i sigma_i - o
    levels, b = CASES["pow2_3bit"]
    alpha, beta, T = 0.5, 1.2, 2.0
    x = _away_from_clamp_kinks(_inputs(rng, (30,)), beta, b, T)
    s, o = np_steps_offset(levels)
    z = T * (beta * x[:, None] - np.asarray(b)[None, :])
    sig = np_sigmoid(np.clip(z, -CLAMP, CLAMP))
    d = np.where(np.abs(z) <= CLAMP, sig * (1 - sig), 0.0)
    variables = [tf.constant(x), tf.constant(alpha, tf.float64), tf.constant(beta, tf.float64)]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(variables)
        y = _soft64(*variables, b, T, levels)
    d_x = tape.gradient(y, variables[0]).numpy()
    np.testing.assert_allclose(d_x, alpha * beta * T * (d @ s), rtol=1e-9)
    d_beta = tape.gradient(y, variables[2]).numpy()
    np.testing.assert_allclose(d_beta, np.sum(alpha * x * T * (d @ s)), rtol=1e-9)
    d_alpha = tape.gradient(y, variables[1]).numpy()
    np.testing.assert_allclose(d_alpha, np.sum(sig @ s - o), rtol=1e-9)


def test_thresholds_get_no_gradient_unless_trainable(rng):
    levels, b = CASES["pow2_3bit"]
    thresholds = tf.constant(b, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(thresholds)
        y = _soft64(tf.constant(_inputs(rng, (20,))), 1.0, 1.0, thresholds, 2.0, levels)
    grad = tape.gradient(y, thresholds)
    assert grad is None or np.all(grad.numpy() == 0.0)


def test_gradient_is_zero_where_every_sigmoid_is_clamped():
    levels, b = CASES["ternary"]
    x = tf.constant([-3.0, 3.0], tf.float64)  # T (x - b) far beyond +-10 at T = 100
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = _soft64(x, 1.0, 1.0, b, 100.0, levels)
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0.0, 0.0])


@pytest.mark.parametrize("name,T", [("binary", 1.0), ("binary", 30.0), ("ternary", 25.0),
                                    ("pow2_3bit", 8.0)])
def test_wide_gradient_is_the_unit_temperature_derivative_times_T(name, T, rng):
    levels, b = CASES[name]
    alpha, beta = 0.4, 1.7
    x = _inputs(rng, (60,))
    x = x[np.all(np.abs(np.abs(beta * x[:, None] - np.asarray(b)) - CLAMP) > 0.1, axis=1)]
    x_t = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        y = _soft64(x_t, alpha, beta, b, T, levels, gradient="wide")
    np.testing.assert_allclose(tape.gradient(y, x_t).numpy(),
                               np_wide_dx(x, alpha, beta, np.asarray(b), T, levels), rtol=1e-9,
                               atol=1e-12)
    # the forward value is unchanged by the gradient option
    np.testing.assert_allclose(y.numpy(), np_soft(x, alpha, beta, b, T, levels), atol=1e-9)


def test_wide_gradient_reaches_inputs_the_exact_one_ignores():
    # At T = 100, x = 0.5 is 50/T past the binary threshold: exact gradient 0, wide gradient > 0.
    levels, b = CASES["binary"]
    x = tf.constant([0.5], tf.float64)
    grads = {}
    for option in ("exact", "wide"):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = _soft64(x, 1.0, 1.0, b, 100.0, levels, gradient=option)
        grads[option] = float(tape.gradient(y, x).numpy()[0])
    assert grads["exact"] == 0.0
    np.testing.assert_allclose(grads["wide"], 100.0 * 2 * np_sigmoid(0.5) * (1 - np_sigmoid(0.5)))


def np_smooth_slope(x, beta, b, T, levels):
    """``T_g sum_i s_i d_i(T_g)`` with ``T_g = min(T, 2)`` (clamped), the smooth backward's slope."""
    s, _ = np_steps_offset(levels)
    t_g = min(T, 2.0)
    total = np.zeros_like(x)
    for s_i, b_i in zip(s, b):
        z = t_g * (beta * x - b_i)
        sig = np_sigmoid(np.clip(z, -CLAMP, CLAMP))
        total += np.where(np.abs(z) <= CLAMP, s_i * sig * (1 - sig), 0.0)
    return t_g * total


@pytest.mark.parametrize("name,T", [("act_3bit", 100.0), ("act_3bit", 5.0), ("pow2_3bit", 50.0),
                                    ("ternary", 30.0), ("custom", 8.0)])
@pytest.mark.parametrize("implementation", ["xla", "graph"])
def test_smooth_gradient_is_the_derivative_at_temperature_min_t_2(name, T, implementation, rng):
    levels, b = CASES[name]
    alpha, beta = 0.4, 1.7
    x = _inputs(rng, (80,))
    x_t, a_t, b_t = tf.constant(x), tf.constant(alpha, tf.float64), tf.constant(beta, tf.float64)
    th = tf.constant(b, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch([x_t, a_t, b_t, th])
        y = soft_staircase(x_t, a_t, b_t, th, T, LevelSet(levels), gradient="smooth",
                           train_thresholds=True, implementation=implementation)
        loss = tf.reduce_sum(y)
    d_x, d_alpha, d_beta, d_b = tape.gradient(loss, [x_t, a_t, b_t, th])
    slope = np_smooth_slope(x, beta, b, T, levels)
    np.testing.assert_allclose(d_x.numpy(), alpha * beta * slope, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(d_beta.numpy(), np.sum(alpha * x * slope), rtol=1e-9, atol=1e-12)
    # alpha's gradient is the forward's, untouched: sum_i s_i sigma_i(T) - o
    np.testing.assert_allclose(d_alpha.numpy(), np.sum(np_soft(x, 1.0, beta, b, T, levels)),
                               rtol=1e-9)
    s, _ = np_steps_offset(levels)
    t_g = min(T, 2.0)
    for i, (s_i, b_i) in enumerate(zip(s, b)):
        z = t_g * (beta * x - b_i)
        sig = np_sigmoid(np.clip(z, -CLAMP, CLAMP))
        d_i = np.where(np.abs(z) <= CLAMP, s_i * sig * (1 - sig), 0.0)
        np.testing.assert_allclose(d_b.numpy()[i], -alpha * t_g * np.sum(d_i), rtol=1e-9,
                                   atol=1e-12)
    np.testing.assert_allclose(y.numpy(), np_soft(x, alpha, beta, b, T, levels), atol=1e-9)


def _input_gradients(x, alpha, beta, b, T, levels, options=("exact", "smooth")):
    """``{option: dy/dx}`` of the float64 soft staircase for each gradient option."""
    x = tf.constant(x)
    grads = {}
    for option in options:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = _soft64(x, alpha, beta, b, T, levels, gradient=option)
        grads[option] = tape.gradient(y, x).numpy()
    return grads


def test_smooth_gradient_equals_the_exact_one_up_to_t_2(rng):
    levels, b = CASES["act_3bit"]
    grads = _input_gradients(_inputs(rng, (60,)), 0.7, 1.1, b, 1.5, levels)
    np.testing.assert_allclose(grads["smooth"], grads["exact"], rtol=1e-12, atol=1e-15)


def test_smooth_gradient_reaches_every_input_inside_the_range_at_high_t():
    # Evenly spaced thresholds one unit apart, T = 100: the exact slope is ~0 between
    # thresholds, the smooth one close to 1 everywhere inside the range and ~0 outside.
    levels = activation_levels(3).levels
    b = [i + 0.5 for i in range(7)]
    inside = np.array([2.0, 2.25, 3.0, 4.75, 5.0])   # at least 1.5 units from the ends
    outside = np.array([-4.0, 12.0])
    grads = _input_gradients(np.concatenate([inside, outside]), 1.0, 1.0, b, 100.0, levels)
    assert np.all(grads["exact"] == 0.0)
    np.testing.assert_allclose(grads["smooth"][:5], 1.0, atol=0.02)
    assert np.all(grads["smooth"][5:] < 1e-3)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_inputs_give_finite_scale_gradients(bad):
    levels = weight_levels(3)
    x = tf.constant([bad, 0.3, -0.2], tf.float32)
    alpha, beta = tf.constant(0.5), tf.constant(2.0)
    thresholds = tf.constant(levels.uniform_thresholds(), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([alpha, beta])
        y = soft_staircase(x, alpha, beta, thresholds, 10.0, levels)
        loss = tf.reduce_sum(y)
    d_alpha, d_beta = tape.gradient(loss, [alpha, beta])
    assert np.isfinite(d_alpha.numpy()) and np.isfinite(d_beta.numpy())


# --- hard_forward_from: the hard staircase forward, the soft backward ------------------------

@pytest.mark.parametrize("implementation", ["xla", "graph"])
@pytest.mark.parametrize("gradient", ["exact", "smooth"])
def test_hard_forward_from_gives_the_hard_value_and_keeps_the_soft_gradient(implementation, gradient):
    levels = activation_levels(2)
    x = tf.constant(np.random.default_rng(3).normal(1.5, 1.2, 2000).astype("float32"))
    args = (0.7, 1.3, [0.5, 1.5, 2.5])
    upstream = tf.constant(np.random.default_rng(4).normal(size=2000).astype("float32"))

    def value_and_gradient(temperature, hard_forward_from):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = soft_staircase(x, *args, temperature, levels, gradient=gradient,
                               implementation=implementation, hard_forward_from=hard_forward_from)
            loss = tf.reduce_sum(y * upstream)
        return y.numpy(), tape.gradient(loss, x).numpy()

    hard = hard_staircase(x, *args, levels).numpy()
    for temperature in (100.0, 400.0):
        y, g = value_and_gradient(temperature, 100.0)
        _, soft_g = value_and_gradient(temperature, None)
        np.testing.assert_array_equal(y, hard)
        np.testing.assert_allclose(g, soft_g, rtol=1e-6, atol=1e-6)
    y, _ = value_and_gradient(50.0, 100.0)           # below: the soft value, not the hard one
    soft_y, _ = value_and_gradient(50.0, None)
    np.testing.assert_array_equal(y, soft_y)
    assert np.abs(y - hard).max() > 0.05

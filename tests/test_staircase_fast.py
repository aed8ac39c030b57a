"""The fast soft staircase equals the plain sum of sigmoids: values and every gradient.

The reference is numpy in float64 (the formula of Yang et al., with the authors'
clamp of the sigmoid argument to [-10, 10]), never the code under test.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tf_qnets.keras2.backend import tf
from tf_qnets.core.levels import LevelSet, activation_levels, weight_levels
from tf_qnets.keras2.quantizer import QNetsQuantizer
from tf_qnets.tf.staircase import soft_staircase

TEMPERATURES = (0.1, 1.0, 7.0, 60.0, 2000.0)

LEVEL_SETS = {
    "binary": weight_levels(1),
    "ternary": weight_levels(2),
    "pow2_3bit": weight_levels(3),
    "act_4bit": activation_levels(4),
    "act_8bit": activation_levels(8),
    "random_small": LevelSet((-9, -4, -3, 0, 2, 7)),
    "random_large": LevelSet(tuple(sorted(
        np.random.default_rng(5).choice(np.arange(-60, 60), 24, replace=False).tolist()))),
}


def numpy_reference(x, alpha, beta, b, temperature, levels, slope_temperature=None,
                    dtype=np.float64):
    """(y, dy/dx, sum dy/dalpha, sum dy/dbeta, sum dy/db) for an upstream gradient of ones.

    The sigmoid arguments ``T (beta x - b_i)`` are rounded as in ``dtype`` arithmetic (the
    clamp at |z| = 10 is a jump of the derivative); everything else is float64.
    """
    slope_temperature = temperature if slope_temperature is None else slope_temperature
    s = np.asarray(levels.steps, np.float64)
    c = lambda v: np.asarray(v, dtype)  # noqa: E731
    diff = (c(beta) * c(x))[..., None] - c(b)
    z = (c(temperature) * diff).astype(np.float64)
    sigma = 1.0 / (1.0 + np.exp(-np.clip(z, -10.0, 10.0)))
    codes = (s * sigma).sum(-1) - levels.offset
    zd = (c(slope_temperature) * diff).astype(np.float64)
    sd = 1.0 / (1.0 + np.exp(-np.clip(zd, -10.0, 10.0)))
    d = np.where(np.abs(zd) <= 10.0, s * sd * (1.0 - sd), 0.0)
    slope = alpha * temperature * d.sum(-1)
    return (alpha * codes, slope * beta, codes.sum(), (slope * x).sum(),
            -alpha * temperature * d.reshape(-1, len(b)).sum(0))


def random_case(levels, rng, duplicate=True):
    n = levels.num_steps
    span = levels.levels[-1] - levels.levels[0]
    b = np.sort(rng.uniform(levels.levels[0], levels.levels[-1], n))
    if duplicate and n >= 3:
        b[n // 2] = b[n // 2 - 1]
    rng.shuffle(b)
    x = rng.normal(0.0, span / 3.0, size=(3, 4, 5)) + np.mean(levels.levels)
    return x, b


_STEPS = {}


def run_fast(x, alpha, beta, b, temperature, levels, dtype, implementation, gradient="exact"):
    """Values and gradients, traced once per setting (a graph: fast while_loops)."""
    key = (levels, dtype, implementation, gradient)
    if key not in _STEPS:
        def step(xt, at, bt, tht, tt):
            with tf.GradientTape() as tape:
                tape.watch([xt, at, bt, tht])
                y = soft_staircase(xt, at, bt, tht, tt, levels, gradient=gradient,
                                   train_thresholds=True, implementation=implementation)
            return [y] + tape.gradient(y, [xt, at, bt, tht])

        _STEPS[key] = tf.function(step, autograph=False)
    outs = _STEPS[key](*(tf.constant(v, dtype) for v in (x, alpha, beta, b, temperature)))
    return [o.numpy() for o in outs]


def assert_matches(got, want, dtype, what):
    rtol = 1e-4 if dtype == tf.float32 else 1e-10
    for name, g, w in zip(("y", "dx", "dalpha", "dbeta", "dthresholds"), got, want):
        scale = max(1.0, float(np.max(np.abs(w))))
        err = float(np.max(np.abs(np.asarray(g, np.float64) - w)))
        assert err <= rtol * scale, f"{what}: {name} off by {err} (scale {scale})"


# Every level set in both dtypes with plain ops; the XLA build of the same math in float32
# for all of them and in float64 for the windowed ones (XLA compiles dominate the run time).
CASES = [(name, dtype, "graph") for name in sorted(LEVEL_SETS) for dtype in ("f32", "f64")]
CASES += [(name, "f32", "xla") for name in sorted(LEVEL_SETS)]
CASES += [(name, "f64", "xla") for name in ("act_8bit", "random_large", "pow2_3bit")]


@pytest.mark.parametrize("name,dtype,implementation", CASES)
def test_fast_path_equals_plain_sum_values_and_gradients(name, dtype, implementation):
    dtype = {"f32": tf.float32, "f64": tf.float64}[dtype]
    levels = LEVEL_SETS[name]
    rng = np.random.default_rng(sorted(LEVEL_SETS).index(name))
    x, b = random_case(levels, rng)
    alpha, beta = 0.7, 1.3
    if dtype == tf.float32:  # the reference sees exactly the float32 inputs
        x, b, alpha, beta = (np.float64(np.float32(v)) for v in (x, b, alpha, beta))
    for temperature in TEMPERATURES:
        got = run_fast(x, alpha, beta, b, temperature, levels, dtype, implementation)
        want = numpy_reference(x, alpha, beta, b, temperature, levels,
                               dtype=dtype.as_numpy_dtype)
        assert_matches(got, want, dtype, f"{name} T={temperature}")


@pytest.mark.parametrize("name,implementation", [
    ("binary", "xla"), ("binary", "graph"), ("pow2_3bit", "graph"), ("act_8bit", "graph")])
def test_wide_gradient_uses_unit_temperature_derivative_times_t(name, implementation):
    levels = LEVEL_SETS[name]
    x, b = random_case(levels, np.random.default_rng(3))
    for temperature in (0.5, 30.0, 2000.0):
        got = run_fast(x, 1.1, 0.9, b, temperature, levels, tf.float64, implementation,
                       gradient="wide")
        want = numpy_reference(x, 1.1, 0.9, b, temperature, levels, slope_temperature=1.0)
        assert_matches(got, want, tf.float64, f"wide {name} T={temperature}")


def test_single_threshold_and_all_thresholds_equal():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3, 4, 5))   # random_case's shape: the traces of the cases above serve
    for levels, b in ((weight_levels(1), np.array([0.2])),
                      (activation_levels(8), np.full(255, 0.3))):
        got = run_fast(x, 2.0, 1.0, b, 40.0, levels, tf.float64, "graph")
        assert_matches(got, numpy_reference(x, 2.0, 1.0, b, 40.0, levels), tf.float64,
                       f"n={levels.num_steps}")


def test_alpha_gradient_is_exact_when_alpha_is_zero():
    levels = weight_levels(3)
    x, b = random_case(levels, np.random.default_rng(2), duplicate=False)
    got = run_fast(x, 0.0, 1.0, b, 5.0, levels, tf.float64, "xla")
    want = numpy_reference(x, 0.0, 1.0, b, 5.0, levels)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-10)


def test_nan_input_gives_nan_output():
    levels = activation_levels(8)
    y = soft_staircase(tf.constant([np.nan, 1.0]), 1.0, 1.0, levels.uniform_thresholds(), 10.0,
                       levels)
    assert np.isnan(y.numpy()[0]) and np.isfinite(y.numpy()[1])


def test_output_keeps_shape_and_dtype():
    levels = activation_levels(2)
    x = tf.zeros([2, 3, 4, 5], tf.float64)
    y = soft_staircase(x, 1.0, 1.0, levels.uniform_thresholds(), 10.0, levels)
    assert y.shape == x.shape and y.dtype == tf.float64


def test_works_inside_jit_compiled_and_plain_tf_functions():
    levels = activation_levels(3)
    b = levels.uniform_thresholds() + 0.1
    x = np.random.default_rng(4).uniform(-1, 8, size=(4, 6)).astype(np.float32)
    want = numpy_reference(x.astype(np.float64), 1.0, 1.0, b, 10.0, levels)

    def step(xt):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = soft_staircase(xt, 1.0, 1.0, b, 10.0, levels)
        return y, tape.gradient(y, xt)

    for jit in (True, False):
        y, dx = tf.function(step, jit_compile=jit)(tf.constant(x))
        np.testing.assert_allclose(y.numpy(), want[0], atol=1e-4)
        np.testing.assert_allclose(dx.numpy(), want[1], atol=1e-4 * np.abs(want[1]).max())


def test_unknown_implementation_is_rejected_clearly():
    levels = weight_levels(2)
    with pytest.raises(ValueError, match="`implementation` must be one of"):
        soft_staircase(tf.zeros([2]), 1.0, 1.0, [-0.5, 0.5], 1.0, levels, implementation="cuda")
    with pytest.raises(ValueError, match="`implementation` must be one of"):
        QNetsQuantizer((-1, 0, 1), implementation="fast")


def test_quantizer_defaults_to_xla_and_reads_old_configs():
    q = QNetsQuantizer((-1, 0, 1))
    assert q.implementation == "xla"
    assert QNetsQuantizer.from_config(q.get_config()) == q
    old = {"levels": [-1, 0, 1], "role": "weights", "gradient": "exact",
           "train_thresholds": False}
    assert QNetsQuantizer.from_config(old).implementation == "xla"
    graph = QNetsQuantizer((-1, 0, 1), implementation="graph")
    assert QNetsQuantizer.from_config(graph.get_config()).implementation == "graph"


MIRRORED_SCRIPT = textwrap.dedent("""
    import numpy as np
    from tf_qnets.keras2.backend import keras, tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import tf_qnets

    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 3, 16)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        h = keras.layers.Conv2D(4, 3, activation="relu")(h)
        outputs = keras.layers.Dense(3)(keras.layers.Flatten()(h))
        model = tf_qnets.quantize_model(keras.Model(inputs, outputs), w_bits=3, a_bits=8,
                                        calibration_data=x, verbose=0)
        tf_qnets.set_temperature(model, weights=10.0, activations=10.0)
        model.compile(keras.optimizers.SGD(0.05),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)), losses
    changed = sum(not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights))
    assert changed >= 4, changed
    print("MIRRORED_OK", losses)
""")


def test_trains_under_mirrored_strategy_with_two_logical_cpus():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert "MIRRORED_OK" in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]


# ------------------------------------------------- the lookup grid (large non-uniform sets)
def test_one_close_pair_of_thresholds_does_not_widen_every_window():
    """The grid's window is the most thresholds any place leaves unclamped, not
    ``10 / (T * smallest gap)``: one pair 0.001 apart among unit gaps keeps it small."""
    from tf_qnets.tf.staircase import _grid_window_needed

    b = activation_levels(8).uniform_thresholds().copy()
    b[100] = b[99] + 1e-3
    for temperature, most in ((10.0, 4), (2.0, 16)):
        needed = int(_grid_window_needed(tf.constant(b, tf.float32), 255,
                                         tf.constant(temperature, tf.float32)))
        assert needed <= most, f"T={temperature}: window {needed}"


def test_clustered_thresholds_equal_the_plain_sum():
    """k-means-like thresholds (most of them crowded near 0, 0.001 apart) need the widest
    windows the grid has; values and gradients still equal the plain sum."""
    levels = activation_levels(8)
    b = np.concatenate([np.arange(150) * 1e-3, np.linspace(1.0, 250.0, 105)])
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-0.5, 1.0, 300), rng.uniform(-5, 260, 300), b, b + 0.05])
    for temperature in (2000.0, 60.0, 10.0, 2.0):
        got = run_fast(x, 0.7, 1.0, b, temperature, levels, tf.float64, "xla")
        assert_matches(got, numpy_reference(x, 0.7, 1.0, b, temperature, levels), tf.float64,
                       f"clustered T={temperature}")

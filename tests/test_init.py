"""Initialisation from a pretrained float model (method.md Sec. 3).

beta = 1.25 p / max|x|, alpha = 1 / beta; thresholds from 1-D k-means (checked against a
brute-force optimum and against Lloyd's fixed-point condition), the +-0.05 rule around
level 0 for weights, b = 0 for binary weights, and activation calibration.
"""

import itertools

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras, tf
from tf_qnets.keras2.input_quantizer import input_ranges
from tf_qnets.core.init_math import activation_thresholds, kmeans_1d, scales_for, weight_thresholds
from tf_qnets.core.levels import LevelSet, activation_levels, weight_levels


def brute_force_kmeans_1d(values, clusters):
    """Globally optimal 1-D k-means: try every split of the sorted data into contiguous groups."""
    data = np.sort(np.asarray(values, np.float64))
    best, best_centres = np.inf, None
    for cuts in itertools.combinations(range(1, data.size), clusters - 1):
        groups = np.split(data, cuts)
        cost = sum(np.sum((g - g.mean()) ** 2) for g in groups)
        if cost < best:
            best, best_centres = cost, np.array([g.mean() for g in groups])
    return best_centres


def lloyd_fixed_point_error(sample, thresholds):
    """max |b_i - (c_i + c_{i+1}) / 2| where c_i is the mean of the sample between thresholds."""
    sample = np.sort(np.asarray(sample, np.float64))
    edges = np.concatenate([[-np.inf], thresholds, [np.inf]])
    centres = np.array([sample[(sample > lo) & (sample <= hi)].mean()
                        for lo, hi in zip(edges[:-1], edges[1:])])
    return np.max(np.abs(thresholds - (centres[:-1] + centres[1:]) / 2))


# --- k-means ---------------------------------------------------------------------------------

def test_kmeans_finds_the_brute_force_optimum_on_a_small_sample(rng):
    sample = np.concatenate([rng.normal(c, 0.3, size=4) for c in (-3.0, 0.0, 2.0, 5.0)])
    np.testing.assert_allclose(kmeans_1d(sample, 4), brute_force_kmeans_1d(sample, 4), atol=1e-9)


def test_kmeans_centres_are_sorted_and_at_most_one_per_cluster(rng):
    sample = rng.normal(size=500)
    centres = kmeans_1d(sample, 7)
    assert centres.shape == (7,)
    assert np.all(np.diff(centres) > 0)


def test_kmeans_on_a_skewed_sample_matches_brute_force(rng):
    sample = np.concatenate([rng.exponential(1.0, size=10), -rng.exponential(0.5, size=4)])
    np.testing.assert_allclose(kmeans_1d(sample, 3), brute_force_kmeans_1d(sample, 3), atol=1e-9)


# --- weight thresholds -----------------------------------------------------------------------

def test_binary_weight_threshold_is_zero(rng):
    np.testing.assert_array_equal(weight_thresholds(rng.normal(size=100), weight_levels(1)), [0.0])


def test_ternary_weight_thresholds_are_plus_minus_0_05(rng):
    np.testing.assert_allclose(weight_thresholds(rng.normal(size=100), weight_levels(2)),
                               [-0.05, 0.05])


def test_three_bit_weight_thresholds_are_kmeans_midpoints_with_the_zero_band(rng):
    levels = weight_levels(3)  # {-4, -2, -1, 0, 1, 2, 4}
    scaled = np.concatenate([rng.normal(c, 0.1, size=2) for c in (-4, -2, -1, 0, 1, 2, 4)])
    centres = brute_force_kmeans_1d(scaled, 7)
    expected = (centres[:-1] + centres[1:]) / 2
    expected[2], expected[3] = -0.05, 0.05  # the two thresholds around level 0
    np.testing.assert_allclose(weight_thresholds(scaled, levels), expected, atol=1e-9)


def test_uniform_three_bit_weights_also_get_the_zero_band(rng):
    levels = weight_levels(3, scheme="uniform")
    thresholds = weight_thresholds(rng.normal(scale=1.5, size=1000), levels)
    np.testing.assert_allclose(thresholds[2:4], [-0.05, 0.05])
    assert np.all(np.diff(thresholds) > 0)


def test_auto_ternary_dead_zone_is_0_7_times_the_mean_magnitude(rng):
    scaled = rng.laplace(scale=0.3, size=5000)
    band = 0.7 * np.mean(np.abs(scaled))
    np.testing.assert_allclose(weight_thresholds(scaled, weight_levels(2), method="auto"),
                               [-band, band], rtol=1e-12)


def test_auto_ternary_dead_zone_nearly_minimises_the_quantization_error(rng):
    # For Gaussian weights the best ternary threshold (with its best scale) is ~0.61 sigma;
    # TWN's 0.7 E|w| = 0.56 sigma is close, the paper's 0.05 (beta domain) is far below.
    weights = rng.normal(size=20000)
    scaled = weights * 1.25 / np.max(np.abs(weights))

    def error(delta):
        codes = np.sign(scaled) * (np.abs(scaled) > delta)
        alpha = np.sum(weights * codes) / max(np.sum(codes * codes), 1)
        return np.mean((weights - alpha * codes) ** 2)

    best = min(error(d) for d in np.linspace(0.0, 0.6, 601))
    auto = weight_thresholds(scaled, weight_levels(2), method="auto")[1]
    assert error(auto) <= 1.01 * best
    assert error(0.05) > 1.3 * best


def test_auto_multi_level_weight_thresholds_keep_the_paper_zero_band(rng):
    levels = weight_levels(3)
    scaled = np.concatenate([rng.normal(c, 0.1, size=2) for c in (-4, -2, -1, 0, 1, 2, 4)])
    np.testing.assert_allclose(weight_thresholds(scaled, levels, method="auto"),
                               weight_thresholds(scaled, levels, method="kmeans"), atol=0)


def test_unknown_weight_threshold_method_is_refused(rng):
    with pytest.raises(ValueError, match="method"):
        weight_thresholds(rng.normal(size=10), weight_levels(2), method="twn")


def test_uniform_threshold_option_puts_thresholds_halfway_between_levels(rng):
    for levels in (weight_levels(2), weight_levels(3), weight_levels(4)):
        np.testing.assert_array_equal(
            weight_thresholds(rng.normal(size=50), levels, method="uniform"),
            levels.uniform_thresholds())


def test_weight_thresholds_are_strictly_increasing_even_for_degenerate_kernels():
    # all weights equal: k-means cannot find 7 clusters; thresholds must still be ordered
    thresholds = weight_thresholds(np.full(20, 3.0), weight_levels(3))
    assert np.all(np.diff(thresholds) > 0)


# --- scales ----------------------------------------------------------------------------------

def test_beta_maps_max_abs_to_1_25_times_the_largest_level():
    alpha, beta = scales_for(weight_levels(3), 0.2)
    assert beta == pytest.approx(1.25 * 4 / 0.2)
    assert alpha == pytest.approx(1 / beta)


def test_a_dead_tensor_gets_finite_scales():
    alpha, beta = scales_for(activation_levels(2), 0.0)
    assert np.isfinite(alpha) and np.isfinite(beta) and beta > 0


# --- through quantize_model --------------------------------------------------------------------

def _quantizers_by_layer(qat):
    return {(wrapper.layer.name, role): (quantizer, variables)
            for wrapper, role, _, quantizer, variables in tf_qnets.quantizer_states(qat)}


@pytest.mark.parametrize("w_bits,p", [(2, 1), (3, 4), (4, 7)])
def test_weight_scales_come_from_the_float_kernel(sequential_model, w_bits, p):
    qat = tf_qnets.quantize_model(sequential_model, w_bits=w_bits, verbose=0)
    states = _quantizers_by_layer(qat)
    for name in ("conv_mid", "dwconv", "dense_mid"):
        kernel = sequential_model.get_layer(name).weights[0].numpy()
        _, variables = states[(name, "weights")]
        beta = 1.25 * p / np.max(np.abs(kernel))
        assert float(variables["beta"].numpy()) == pytest.approx(beta, rel=1e-6)
        assert float(variables["alpha"].numpy()) == pytest.approx(1 / beta, rel=1e-6)


def test_weight_thresholds_through_quantize_model_follow_the_zero_band_rule(sequential_model):
    qat = tf_qnets.quantize_model(sequential_model, w_bits=3, verbose=0)
    _, variables = _quantizers_by_layer(qat)[("conv_mid", "weights")]
    thresholds = variables["thresholds"].numpy()
    np.testing.assert_allclose(thresholds[2:4], [-0.05, 0.05], rtol=1e-6)
    assert np.all(np.diff(thresholds) > 0)


def test_uniform_thresholds_option_of_quantize_model(sequential_model):
    qat = tf_qnets.quantize_model(sequential_model, w_bits=3, thresholds="uniform", verbose=0)
    _, variables = _quantizers_by_layer(qat)[("conv_mid", "weights")]
    np.testing.assert_allclose(variables["thresholds"].numpy(), [-3, -1.5, -0.5, 0.5, 1.5, 3])


def _relu_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((5,))
    x = keras.layers.Dense(16, name="first")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Dense(8, name="middle")(x)
    outputs = keras.layers.Dense(2, name="last")(x)
    return keras.Model(inputs, outputs)


def test_activation_beta_comes_from_the_calibration_maximum(rng):
    model = _relu_model()
    data = rng.normal(size=(64, 5)).astype("float32")
    qat = tf_qnets.quantize_model(model, w_bits=None, a_bits=3, calibration_data=data,
                                  thresholds="kmeans", verbose=0)
    _, variables = _quantizers_by_layer(qat)[("relu", "output")]
    # the layers before the ReLU are float, so its input is the float model's, read from the
    # model input after its int8 rounding (the input quantizer the file shares)
    (lo, hi), = input_ranges(qat).values()
    rounded = tf.quantization.fake_quant_with_min_max_args(data, lo, hi).numpy()
    activations = np.maximum(rounded @ model.get_layer("first").kernel.numpy()
                             + model.get_layer("first").bias.numpy(), 0.0)
    beta = 1.25 * 7 / activations.max()
    assert float(variables["beta"].numpy()) == pytest.approx(beta, rel=1e-5)
    assert float(variables["alpha"].numpy()) == pytest.approx(1 / beta, rel=1e-5)


def test_activation_thresholds_are_a_kmeans_fixed_point_of_the_calibration_sample(rng):
    model = _relu_model()
    data = rng.normal(size=(64, 5)).astype("float32")
    qat = tf_qnets.quantize_model(model, w_bits=None, a_bits=2, calibration_data=data,
                                  thresholds="kmeans", verbose=0)
    _, variables = _quantizers_by_layer(qat)[("relu", "output")]
    first = model.get_layer("first")
    sample = np.maximum(data @ first.kernel.numpy() + first.bias.numpy(), 0.0).ravel()
    scaled = float(variables["beta"].numpy()) * sample
    thresholds = variables["thresholds"].numpy().astype(np.float64)
    assert thresholds.shape == (3,) and np.all(np.diff(thresholds) > 0)
    assert lloyd_fixed_point_error(scaled, thresholds) < 1e-3


def test_default_activation_init_is_uniform_thresholds_at_the_mse_optimal_scale(rng):
    model = _relu_model()
    data = rng.normal(size=(64, 5)).astype("float32")
    qat = tf_qnets.quantize_model(model, w_bits=None, a_bits=2, calibration_data=data, verbose=0)
    _, variables = _quantizers_by_layer(qat)[("relu", "output")]
    first = model.get_layer("first")
    sample = np.maximum(data @ first.kernel.numpy() + first.bias.numpy(), 0.0).ravel()
    np.testing.assert_allclose(variables["thresholds"].numpy(), [0.5, 1.5, 2.5])
    alpha = float(variables["alpha"].numpy())

    def mse(step):   # nearest of the levels {0, 1, 2, 3} times step
        return np.mean((sample - step * np.clip(np.round(sample / step), 0, 3)) ** 2)

    grid = np.linspace(1e-3, 1.25 * sample.max() / 3, 2000)
    assert mse(alpha) <= 1.02 * min(mse(step) for step in grid)


def test_one_bit_activation_threshold_is_0_05(rng):
    sample = np.abs(rng.normal(size=200))
    np.testing.assert_allclose(activation_thresholds(sample, activation_levels(1)), [0.05])


def test_activation_calibration_accepts_a_dataset_of_x_y_batches(rng):
    import tensorflow as tf

    model = _relu_model()
    x = rng.normal(size=(64, 5)).astype("float32")
    y = rng.integers(0, 2, size=64)
    from_array = tf_qnets.quantize_model(model, w_bits=None, a_bits=2, calibration_data=x,
                                         verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    from_dataset = tf_qnets.quantize_model(model, w_bits=None, a_bits=2,
                                           calibration_data=dataset, verbose=0)
    a = _quantizers_by_layer(from_array)[("relu", "output")][1]
    b = _quantizers_by_layer(from_dataset)[("relu", "output")][1]
    for key in ("alpha", "beta", "thresholds"):
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-6)


def test_custom_level_set_is_initialised_from_its_own_max_level(sequential_model):
    qat = tf_qnets.quantize_model(sequential_model, w_bits=[-2, -1, 0, 1, 2, 3], verbose=0)
    quantizer, variables = _quantizers_by_layer(qat)[("dense_mid", "weights")]
    assert quantizer.levels == LevelSet((-2, -1, 0, 1, 2, 3))
    kernel = sequential_model.get_layer("dense_mid").kernel.numpy()
    assert float(variables["beta"].numpy()) == pytest.approx(1.25 * 3 / np.abs(kernel).max(),
                                                             rel=1e-6)

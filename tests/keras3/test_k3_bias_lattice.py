"""Keras 3: folded biases move onto the integer file's int32 lattice (tf_qnets.core.bias_lattice),
when ``quantize_model`` returns, on demand and at the end of ``fit`` with
``TemperatureScheduler``, on any backend and without
TensorFlow (the units come from the model's description)."""

import keras
import numpy as np
import pytest

import tf_qnets
from tf_qnets.core.bias_lattice import OFF_LATTICE_TOLERANCE, bias_lattices
from tf_qnets.keras3.describe_network import describe_network


def _block(project_scale=True, expand=False):
    """Expand to a ReLU staircase, then a linear projection + BN (as in MobileNetV2;
    ``project_scale``: that BN has a ``gamma``; ``expand``: a 1x1 convolution + BN + ReLU
    between them, whose staircase the file computes in its requantization)."""
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    if expand:
        x = keras.layers.Conv2D(8, 1, use_bias=False, name="expand")(x)
        x = keras.layers.BatchNormalization(name="expand_bn")(x)
        x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Conv2D(8, 1, use_bias=False, name="project")(x)
    x = keras.layers.BatchNormalization(scale=project_scale, name="project_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def _setting(monkeypatch=None, project_scale=True, expand=False):
    """The block quantized; with ``monkeypatch``, as quantize_model left it before its own snap."""
    if monkeypatch is not None:
        monkeypatch.setattr("tf_qnets.keras3.api.snap_if_describable", lambda *args: None)
    x = np.random.default_rng(0).uniform(0, 1, (64, 12, 12, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(_block(project_scale, expand), w_bits=3, a_bits=3,
                                  calibration_data=x, verbose=0)
    return qat, x


def _offsets(qat):
    return {row.layer: float(np.max(np.abs(row.offset))) for row in bias_lattices(describe_network(qat))}


def test_quantize_model_returns_the_biases_on_the_lattice():
    qat, _ = _setting()
    offsets = _offsets(qat)
    assert set(offsets) == {"project", "stem"}
    assert max(offsets.values()) <= OFF_LATTICE_TOLERANCE
    assert tf_qnets.snap_biases(qat).moved == []


def test_snap_biases_moves_a_projection_bias_by_at_most_half_a_unit(monkeypatch):
    qat, _ = _setting(monkeypatch, project_scale=False)     # no BN scale: the bias alone moves
    # the stem (float, first layer) reads the model input: its channels without an alignment
    # keep a rounded bias; the head reads a calibrated range
    assert set(_offsets(qat)) == {"project", "stem"}
    assert _offsets(qat)["project"] > OFF_LATTICE_TOLERANCE
    beta = qat.get_layer("project_bn").layer.beta
    before = keras.ops.convert_to_numpy(beta).astype(np.float64)
    row = {row.layer: row for row in bias_lattices(describe_network(qat))}["project"]
    report = tf_qnets.snap_biases(qat)
    assert "project" in report.moved and 0.3 < report.largest_move <= 0.5
    moved = np.abs(keras.ops.convert_to_numpy(beta) - before) / row.unit
    assert np.all(moved <= 0.5 + 1e-3)
    assert _offsets(qat)["project"] <= OFF_LATTICE_TOLERANCE


def test_a_projection_with_a_bn_scale_gets_roundings_that_float32_decides_as_the_file(
        monkeypatch):
    from tf_qnets.core.rounding_margin import MARGIN, MAX_GAIN_CHANGE

    qat, _ = _setting(monkeypatch)
    gamma = qat.get_layer("project_bn").layer.gamma
    before = keras.ops.convert_to_numpy(gamma).astype(np.float64)
    report = tf_qnets.snap_biases(qat)
    assert report.margins == ["project"]
    gain = keras.ops.convert_to_numpy(gamma) / before
    assert np.all(np.abs(gain - 1) <= MAX_GAIN_CHANGE) and np.any(gain != 1)
    row = {row.layer: row for row in bias_lattices(describe_network(qat))}["project"]
    x = row.unit * row.lattice / row.output_step
    values = np.arange(-40000, 40001)[:, None] * x + row.bias / row.output_step
    distance = np.abs(values - np.floor(values) - 0.5)
    assert np.min(np.where(np.abs(values) <= 256, distance, np.inf)) >= 0.9 * MARGIN
    assert tf_qnets.snap_biases(qat).moved == []


@pytest.mark.parametrize("snap", [True, False])
def test_fit_with_the_scheduler_ends_on_the_lattice_unless_told_not_to(snap, monkeypatch):
    qat, x = _setting(monkeypatch)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, np.arange(64) % 4, epochs=1, batch_size=32, verbose=0,
            callbacks=[tf_qnets.TemperatureScheduler(snap_biases=snap)])
    assert (_offsets(qat)["project"] <= OFF_LATTICE_TOLERANCE) == snap


def test_a_float_model_is_refused():
    with pytest.raises(ValueError, match="quantize_model"):
        tf_qnets.snap_biases(_block())


def test_a_conv_with_a_bias_before_an_add_gets_its_margin_from_the_output_range(monkeypatch):
    """ResNetV2's last block convolution (bias, no BN, int8 output read by the ``Add``): one gain
    on the Keras 3 output quantizer's range keeps its roundings decidable."""
    monkeypatch.setattr("tf_qnets.keras3.api.snap_if_describable", lambda *args: None)
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    r = keras.layers.BatchNormalization(name="pre_bn")(x)
    r = keras.layers.ReLU(name="pre_relu")(r)
    r = keras.layers.Conv2D(8, 3, padding="same", name="last")(r)
    x = keras.layers.Add(name="add")([x, r])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(x))
    data = np.random.default_rng(0).uniform(0, 1, (48, 12, 12, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(model, w_bits=3, a_bits=3, calibration_data=data, verbose=0)
    row = {row.layer: row for row in bias_lattices(describe_network(qat))}["last"]
    assert (row.owner, row.attribute, row.range_owner) == ("last", "bias", "last")
    quantizer = qat.get_layer("last").output_quantizer
    before = float(keras.ops.convert_to_numpy(quantizer.max_var))
    report = tf_qnets.snap_biases(qat)
    assert "last" in report.margins
    after = float(keras.ops.convert_to_numpy(quantizer.max_var))
    assert after != before and abs(after / before - 1) <= 5e-3
    row = {row.layer: row for row in bias_lattices(describe_network(qat))}["last"]
    assert row.on_lattice
    assert tf_qnets.snap_biases(qat).margins == []          # a second call changes nothing


def test_snap_biases_keeps_an_aligned_staircase_transition_off_the_accumulator_lattice(monkeypatch):
    from tf_qnets.core.bias_lattice import aligned_transitions
    from tf_qnets.core.transition_margin import RELATIVE_MARGINS, transition_margins

    qat, _ = _setting(monkeypatch, expand=True)

    def expand_row():
        rows = {row.layer: row for row in aligned_transitions(describe_network(qat))}
        return rows["expand"]

    row = expand_row()
    assert (row.owner, row.attribute) == ("expand_bn", "beta")
    # move channel 0's first transition onto a lattice point
    p = row.transitions[0, 0]
    on_point = row.lattice[0] * np.round(p / row.lattice[0])
    beta_variable = qat.get_layer("expand_bn")
    beta_variable = getattr(beta_variable, "layer", beta_variable).beta
    beta = keras.ops.convert_to_numpy(beta_variable).astype(np.float64)
    beta[0] += (p - on_point) * row.units[0]
    beta_variable.assign(beta.astype(np.float32))
    assert abs(expand_row().transitions[0, 0] - on_point) < 1e-3
    report = tf_qnets.snap_biases(qat)
    assert report.transitions == ["expand"]
    row = expand_row()
    margin = transition_margins(row.transitions, row.bias / row.units, RELATIVE_MARGINS[0])
    distance = np.abs(row.transitions - row.lattice[:, None]
                      * np.round(row.transitions / row.lattice[:, None]))
    assert np.all(distance >= 0.9 * margin)
    assert tf_qnets.snap_biases(qat).transitions == []


def test_snap_biases_moves_the_beta_of_a_block_staircase_off_a_sum_on_its_transition():
    """A residual block output (Add, then a ReLU staircase the file computes in the ADD's
    requantization) with ``beta`` set to put one reachable sum on a transition: the snap scales
    that Keras 3 ``beta`` variable by a few millionths (tf_qnets.core.add_margin)."""
    from tf_qnets.core.add_margin import add_roundings, beta_factor, sum_grid

    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.ReLU(name="stem_relu")(x)
    r = keras.layers.Conv2D(8, 3, padding="same", name="branch")(x)
    r = keras.layers.BatchNormalization(name="branch_bn")(r)
    x = keras.layers.ReLU(name="block_relu")(keras.layers.Add(name="add")([x, r]))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(x))
    data = np.random.default_rng(0).uniform(0, 1, (48, 12, 12, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(model, w_bits=4, a_bits=4, calibration_data=data, verbose=0)
    (staircase,) = add_roundings(describe_network(qat))
    assert staircase.layer == "block_relu"
    (scale_a, codes_a), (scale_b, codes_b) = staircase.inputs
    variable = qat.get_layer("block_relu").output_quantizer.beta
    variable.assign(np.float32(7.5 / (scale_a * codes_a[5] + scale_b * codes_b[200])))
    (planted,) = add_roundings(describe_network(qat))
    assert beta_factor(*sum_grid(planted.inputs, planted.beta), planted.thresholds,
                       planted.beta)[1] >= 1
    assert tf_qnets.snap_biases(qat).sums == ["block_relu"]
    moved = float(keras.ops.convert_to_numpy(variable))
    assert 0 < abs(moved / planted.beta - 1) <= 1e-3
    (after,) = add_roundings(describe_network(qat))
    assert beta_factor(*sum_grid(after.inputs, after.beta), after.thresholds, after.beta)[1] == 0
    assert tf_qnets.snap_biases(qat).sums == []

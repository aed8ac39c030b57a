"""Folded biases move onto the file's int32 lattice (tf_qnets.export.bias_lattice).

The model: a MobileNetV2-like block (tests/test_finer_input.py) whose linear projection + BN
is exported as a plain CONV_2D with an int32 bias ``round(b / u)``. Before the move, the
file's projection outputs differ from the Keras ones wherever the bias rounding crosses an
int8 rounding boundary; after it they agree.
"""

import numpy as np
import pytest

import tf_qnets
from test_finer_input import _model, _projection_off_rate
from tf_qnets.core.bias_lattice import OFF_LATTICE_TOLERANCE
from tf_qnets.core.bias_lattice import bias_lattices as lattices_of_network
from tf_qnets.keras2.backend import keras
from tf_qnets.keras2.describe_network import describe_network


def bias_lattices(qat):
    return lattices_of_network(describe_network(qat))


def _setting(monkeypatch=None, project_scale=True):
    """The block quantized; with ``monkeypatch``, as quantize_model left it before its own snap."""
    if monkeypatch is not None:
        monkeypatch.setattr("tf_qnets.keras2.api.snap_if_describable", lambda *args: None)
    data = np.random.default_rng(0).uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(_model(project_scale), w_bits=3, a_bits=3,
                                  calibration_data=data, first_last="int8", verbose=0)
    return qat, data


def _beta(qat):
    return qat.get_layer("quant_project_bn").layer.beta.numpy().astype(np.float64)


def _gamma(qat):
    return qat.get_layer("quant_project_bn").layer.gamma.numpy().astype(np.float64)


def test_quantize_model_returns_the_biases_on_the_lattice(tmp_path):
    qat, x = _setting()
    assert all(np.max(np.abs(row.offset)) <= OFF_LATTICE_TOLERANCE for row in bias_lattices(qat))
    assert tf_qnets.snap_biases(qat).moved == []
    report = tf_qnets.export_tflite(qat, str(tmp_path / "q.tflite"), x, verify_data=x)
    assert report.off_lattice == [] and report.verification.agreement == 1.0


def test_a_projection_without_a_bn_scale_moves_its_bias_by_at_most_half_a_unit(monkeypatch):
    qat, _ = _setting(monkeypatch, project_scale=False)
    # the stem reads the model input (its unaligned channels keep a rounded bias); the head
    # reads a calibrated range: not listed
    rows = {row.layer: row for row in bias_lattices(qat)}
    assert sorted(rows) == ["quant_project", "quant_stem"]
    lattice = rows["quant_project"]
    assert (lattice.owner, lattice.attribute) == ("quant_project_bn", "beta")
    assert lattice.scale_owner is None and not lattice.on_lattice
    before = _beta(qat)
    report = tf_qnets.snap_biases(qat)
    assert "quant_project" in report.moved and report.checked == 2 and report.margins == []
    assert 0.3 < report.largest_move <= 0.5
    moved = np.abs(_beta(qat) - before) / lattice.unit
    assert np.all(moved <= 0.5 + 1e-3) and np.any(moved > 0.1)
    for row in bias_lattices(qat):
        assert np.max(np.abs(row.offset)) <= OFF_LATTICE_TOLERANCE
    assert tf_qnets.snap_biases(qat).moved == []          # a second call changes nothing


def _distance_to_rounding(row, span=40000):
    """Per channel, the least distance (int8 steps) from a half-integer of the values
    ``(unit / step) (A + B)`` inside the int8 window (``|v| <= 256``; outside, the int8 value
    saturates) for the accumulators ``A`` in ``L Z``, ``|A| <= span L``."""
    x = row.unit * row.lattice / row.output_step
    offset = row.bias / row.output_step
    values = np.arange(-span, span + 1)[:, None] * x + offset
    distance = np.abs(values - np.floor(values) - 0.5)
    return np.min(np.where(np.abs(values) <= 256, distance, np.inf), axis=0)


def test_the_projection_gets_a_scale_and_bias_that_float32_rounds_as_the_file(monkeypatch):
    from tf_qnets.core.rounding_margin import MARGIN, MAX_GAIN_CHANGE

    qat, _ = _setting(monkeypatch)
    row = {row.layer: row for row in bias_lattices(qat)}["quant_project"]
    assert row.scale_owner == "quant_project_bn" and row.output_step > 0
    assert np.min(_distance_to_rounding(row)) < MARGIN     # as trained: some values near a tie
    gamma, beta = _gamma(qat), _beta(qat)
    report = tf_qnets.snap_biases(qat)
    assert report.margins == ["quant_project"] and "quant_project" in report.moved
    assert "keep their roundings decidable in float32" in str(report)
    gain = _gamma(qat) / gamma
    assert np.all(np.abs(gain - 1) <= MAX_GAIN_CHANGE) and np.any(gain != 1)
    row = {row.layer: row for row in bias_lattices(qat)}["quant_project"]
    assert row.on_lattice
    # every value the layer can compute sits at least MARGIN (less float32's share) from a
    # rounding boundary, so Keras' float32 value rounds as the file's exact one
    assert np.min(_distance_to_rounding(row)) >= 0.9 * MARGIN
    assert np.max(np.abs(_beta(qat) - beta) / row.unit) < 40     # a few units, not a new bias
    again = tf_qnets.snap_biases(qat)
    assert again.moved == [] and again.margins == []        # a second call changes nothing


def test_on_the_lattice_the_projection_outputs_agree_with_the_file(tmp_path, monkeypatch):
    qat, x = _setting(monkeypatch)
    before = _projection_off_rate(qat, x, str(tmp_path / "before.tflite"))
    tf_qnets.snap_biases(qat)
    after = _projection_off_rate(qat, x, str(tmp_path / "after.tflite"))
    # measured: 0.24% of the 131,072 int8 outputs before, 1 output (0.0008%) after
    assert before > 0.001 and after < 0.1 * before


def _fit(qat, x, **options):
    labels = np.arange(len(x)) % 10
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, labels, epochs=1, batch_size=32, verbose=0,
            callbacks=[tf_qnets.TemperatureScheduler(**options)])


def test_fit_with_the_scheduler_ends_on_the_lattice_and_export_says_so(tmp_path, monkeypatch):
    qat, x = _setting(monkeypatch)
    report = tf_qnets.export_tflite(qat, str(tmp_path / "before.tflite"), x)
    assert "quant_project" in report.off_lattice
    assert f"biases off the int32 lattice: {len(report.off_lattice)} kernel layers (" in str(report)
    _fit(qat, x)
    report = tf_qnets.export_tflite(qat, str(tmp_path / "after.tflite"), x, verify_data=x)
    assert report.off_lattice == [] and "off the int32 lattice" not in str(report)
    assert report.verification.agreement == 1.0


def test_the_scheduler_can_leave_the_biases_as_trained(tmp_path, monkeypatch):
    qat, x = _setting(monkeypatch)
    _fit(qat, x, snap_biases=False)
    assert not {row.layer: row for row in bias_lattices(qat)}["quant_project"].on_lattice


def test_snap_biases_must_be_a_bool():
    with pytest.raises(TypeError, match="`snap_biases` must be a bool"):
        tf_qnets.TemperatureScheduler(snap_biases="yes")
    config = tf_qnets.TemperatureScheduler(snap_biases=False).get_config()
    assert tf_qnets.TemperatureScheduler.from_config(config).snap_biases is False


def test_snap_biases_refuses_a_float_model():
    float_model = _model()
    with pytest.raises((TypeError, ValueError), match="quantize_model"):
        tf_qnets.snap_biases(float_model)


def _residual_model():
    """A ResNet-like stem and bottleneck (zero padding, max pooling, a projection shortcut, a
    residual Add before its ReLU), a ReLU6 branch and a Dense head."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((20, 20, 3), name="image")
    x = keras.layers.ZeroPadding2D(1, name="pad")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool")(x)
    y = keras.layers.Conv2D(6, 1, name="reduce")(x)
    y = keras.layers.BatchNormalization(name="reduce_bn")(y)
    y = keras.layers.ReLU(6.0, name="reduce_relu6")(y)
    y = keras.layers.Conv2D(12, 1, name="expand")(y)             # linear: before the Add
    y = keras.layers.BatchNormalization(name="expand_bn")(y)
    s = keras.layers.Conv2D(12, 1, use_bias=False, name="shortcut")(x)
    s = keras.layers.BatchNormalization(name="shortcut_bn")(s)
    x = keras.layers.ReLU(name="block_relu")(keras.layers.Add(name="block_add")([y, s]))
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="head")(x))


def test_the_units_read_from_the_description_are_the_ones_the_export_uses():
    from tf_qnets.export.bias_lattice import traced_bias_lattices
    from tf_qnets.export.describe import describe
    from tf_qnets.export.emit import calibrate, trace
    from tf_qnets.export.plan import make_plan

    x = np.random.default_rng(2).uniform(0, 1, (32, 20, 20, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(_residual_model(), w_bits=4, a_bits=4, calibration_data=x,
                                  verbose=0)
    network, native = describe(qat)
    plan = make_plan(network, native=native)
    _, context = trace(plan, calibrate(plan, [x]))
    traced = {row.layer: row for row in traced_bias_lattices(plan, context)}
    read = {row.layer: row for row in lattices_of_network(network)}
    # expand and shortcut (before the Add; the shortcut reads a staircase through padding and
    # pooling), and the first and last layers, kept float: the head (through Flatten) and
    # the stem (it reads the model input, so its channels without an alignment keep a
    # rounded bias); reduce is aligned to its ReLU6 staircase (the cap clips no code here)
    assert sorted(read) == sorted(traced) == ["head", "quant_expand", "quant_shortcut", "stem"]
    for name, row in read.items():
        np.testing.assert_allclose(row.unit, traced[name].unit, rtol=1e-6)
        np.testing.assert_array_equal(row.bias, traced[name].bias)
        assert (row.owner, row.attribute) == (traced[name].owner, traced[name].attribute)
    assert read["quant_shortcut"].attribute == "beta" and read["head"].attribute == "bias"


def test_a_file_exported_with_other_options_says_which_lattice_snap_biases_uses(tmp_path):
    data = np.random.default_rng(0).uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    # 128 filters: the default ("auto") gives the projection its finer input
    qat = tf_qnets.quantize_model(_model(project_filters=128), w_bits=3, a_bits=3,
                                  calibration_data=data, first_last="int8", verbose=0)
    report = tf_qnets.export_tflite(qat, str(tmp_path / "plain.tflite"), data, finer_inputs=False)
    # without the finer input the projection's unit is 36 times coarser: off again
    assert report.off_lattice == ["quant_project"] and not report.default_lattice
    assert "export with int4_weights=False and finer_inputs='auto'" in str(report)


def test_a_linear_conv_with_a_bias_before_an_add_gets_a_margin_from_its_output_range(monkeypatch):
    """ResNetV2's last block convolution: a bias, no BN, an int8 output read by the ``Add``.
    Its channels share one unit, so one gain on the int8 output range (not a BN scale) puts
    every value it can compute MARGIN away from a rounding boundary."""
    from test_export_preactivation import preactivation_net
    from tf_qnets.core.rounding_margin import MARGIN, MAX_GAIN_CHANGE

    monkeypatch.setattr("tf_qnets.keras2.api.snap_if_describable", lambda *args: None)
    x = (np.random.default_rng(0).integers(0, 256, (48, 12, 12, 3)) / 255.0).astype("float32")
    qat = tf_qnets.quantize_model(preactivation_net(), w_bits=3, a_bits=3, calibration_data=x,
                                  first_last="int8", verbose=0)
    row = {row.layer: row for row in bias_lattices(qat)}["quant_conv2"]
    assert (row.owner, row.attribute, row.range_owner, row.scale_owner) == (
        "quant_conv2", "bias", "quant_conv2", None)
    assert np.min(_distance_to_rounding(row)) < MARGIN      # as calibrated: values near a tie
    step = row.output_step
    report = tf_qnets.snap_biases(qat)
    assert report.margins == ["quant_conv2"]
    row = {row.layer: row for row in bias_lattices(qat)}["quant_conv2"]
    assert 0 < abs(row.output_step / step - 1) <= MAX_GAIN_CHANGE and row.on_lattice
    assert np.min(_distance_to_rounding(row)) >= 0.9 * MARGIN
    again = tf_qnets.snap_biases(qat)
    assert again.moved == [] and again.margins == []        # a second call changes nothing


def test_a_bias_float32_cannot_hold_closer_counts_as_settled():
    """A ResNet101's last projection (random weights): units of 6e-6 on folded biases of 1.6,
    finer than float32 holds them; the snap moved every channel by a few of those float32 steps
    on every call until such a move counted as settled."""
    from tf_qnets.core.bias_lattice import _settled_tolerance

    unit = np.array([6.1e-6, 0.01])
    bias = np.array([1.6, 1.6])
    tolerance = _settled_tolerance(bias, unit)
    step = float(np.spacing(np.float32(1.6)))
    assert tolerance[0] == 8 * step and tolerance[0] > OFF_LATTICE_TOLERANCE * unit[0]
    assert tolerance[1] == OFF_LATTICE_TOLERANCE * unit[1]      # a coarse unit: as before


def test_a_first_layer_with_8bit_weights_on_pixels_gets_the_fine_grid(tmp_path):
    """EfficientNet's stem: 8-bit weights reading 8-bit pixels through ``Rescaling(1 / 255)``,
    a BN, an int8 pre-activation before a swish. Its accumulator unit is a few 1e-4 of an int8
    step, too fine for the odd grid with q <= MAX_DENOMINATOR; without a grid its values came
    1e-6 steps from rounding ties, which Keras' float32 decided apart from the file (2 of
    16 million values of EfficientNetB0's stem, in 2 of 2000 images)."""
    from conftest import cut_export_offset, vary_batch_norms
    from tf_qnets.core.rounding_margin import FINE_MARGIN, MAX_DENOMINATOR, margin_gains

    inputs = keras.Input((12, 12, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescaling")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False, name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("swish", name="stem_swish")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
    vary_batch_norms(model, seed=5)
    pixels = np.random.default_rng(2).integers(0, 256, (64, 12, 12, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(model, w_bits=3, a_bits=3, calibration_data=pixels,
                                  first_last="int8", verbose=0)
    row = {row.layer: row for row in bias_lattices(qat)}["quant_stem"]
    assert row.scale_owner == "quant_stem_bn" and row.output_step > 0
    x_c = row.unit * row.lattice / row.output_step
    gains, ps, qs = margin_gains(x_c)
    assert np.all(qs > MAX_DENOMINATOR) and np.all(np.abs(gains - 1) < 1e-6)   # on the grid
    for c in range(4):
        accumulators = np.arange(-int(256 / x_c[c]) - 1, int(256 / x_c[c]) + 2)
        values = (accumulators + row.bias[c] / (row.unit[c] * row.lattice[c])) * x_c[c]
        values = values[np.abs(values) <= 256]
        assert np.min(np.abs(values - np.floor(values) - 0.5)) >= 0.9 * FINE_MARGIN
    assert tf_qnets.snap_biases(qat).moved == []          # a second call changes nothing
    worst, off = cut_export_offset(qat, "quant_stem_bn", pixels, pixels[:32],
                                   str(tmp_path / "stem.tflite"))
    assert worst < 0.25 and off == 0.0

"""A linear kernel layer reading a saturating staircase reads it re-stored finer
(tf_qnets.export.emit.EmitContext.finer_input): every such layer with ``finer_inputs=True``,
those doing at least 128 multiply-adds per value read with ``"auto"`` (the default).

The staircase output keeps one int8 code per level (scale ``alpha``); the layer after it rounds
its int32 bias to ``alpha * s_w``. One requantizing MUL re-stores level ``v`` as ``m v - 128``
(``m = 255 // n``, scale ``alpha / m``), which changes no value and makes that unit ``m`` times
finer.
"""

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras
from tf_qnets.runtime import load_interpreter


def _model(project_scale=True, project_filters=8):
    """A MobileNetV2-like block: expand to a ReLU staircase, then a linear projection + BN
    (``project_scale``: that BN has a ``gamma``; ``project_filters``: its width, 8: under
    ``FINER_INPUT_MIN_WORK`` multiply-adds per value read, so no finer input by default)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.Conv2D(16, 1, use_bias=False, name="expand")(x)
    x = keras.layers.BatchNormalization(name="expand_bn")(x)
    x = keras.layers.ReLU(name="relu")(x)                 # aligned 3-bit staircase, levels 0..7
    x = keras.layers.Conv2D(project_filters, 1, use_bias=False, name="project")(x)  # linear
    x = keras.layers.BatchNormalization(scale=project_scale, name="project_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(x))


def _mul_count(report):
    return sum(n for name, _, n in report.ops if name == "MUL")


@pytest.fixture(scope="module")
def setting():
    data = np.random.default_rng(0).uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(_model(), w_bits=3, a_bits=3, calibration_data=data,
                                  first_last="int8", verbose=0)
    return qat, data


def _projection_off_rate(qat, x, path, **options):
    """Share of the projection's int8 outputs (file, XNNPACK) off the Keras value."""
    tf_qnets.export_tflite(qat, path, x, **options)
    interpreter = load_interpreter(path, preserve_all_tensors=True)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    shape = (len(x), 16, 16, 8)
    convs = [op for op in interpreter._get_ops_details()  # noqa: SLF001
             if op["op_name"] == "CONV_2D"
             and tuple(interpreter._get_tensor_details(op["outputs"][0], 0)["shape"]) == shape]
    tensor = interpreter._get_tensor_details(convs[-1]["outputs"][0], 0)  # noqa: SLF001
    scale, zero = tensor["quantization"]
    values = (interpreter.get_tensor(tensor["index"]).astype(np.float32) - zero) * scale
    keras_values = keras.Model(qat.inputs, qat.get_layer("quant_project_bn").output)(x, training=False)
    return float(np.mean(np.abs(values - np.asarray(keras_values)) > scale / 2))


def test_the_staircase_is_restored_36_times_finer_by_one_mul(setting, tmp_path):
    qat, x = setting
    path = str(tmp_path / "finer.tflite")
    tf_qnets.export_tflite(qat, path, x, finer_inputs=True)
    interpreter = load_interpreter(path)
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    muls = [op for op in interpreter._get_ops_details()  # noqa: SLF001
            if op["op_name"] == "MUL" and "quant_relu_" in details[op["inputs"][0]]["name"]]
    assert len(muls) == 1
    staircase = details[muls[0]["inputs"][0]]["quantization"]
    finer = details[muls[0]["outputs"][0]]["quantization"]
    assert staircase[1] == 127 - 7                 # levels 0..7 at codes 120..127
    assert finer[1] == -128 and finer[0] == pytest.approx(staircase[0] / 36, rel=1e-5)


def test_the_finer_input_moves_fewer_projection_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr("tf_qnets.keras2.api.snap_if_describable", lambda *args: None)
    x = np.random.default_rng(0).uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(_model(), w_bits=3, a_bits=3, calibration_data=x,
                                  first_last="int8", verbose=0)      # biases as trained
    finer = _projection_off_rate(qat, x, str(tmp_path / "finer.tflite"), finer_inputs=True)
    plain = _projection_off_rate(qat, x, str(tmp_path / "plain.tflite"), finer_inputs=False)
    # measured: 0.24% against 0.70% of the 131,072 outputs (the rest: roundings not located)
    assert finer < 0.5 * plain and plain > 0.004


@pytest.mark.parametrize("value", ["yes", 1, None, "Auto"])
def test_finer_inputs_must_be_true_false_or_auto(setting, tmp_path, value):
    qat, x = setting
    with pytest.raises(TypeError, match='`finer_inputs` must be True, False or "auto"'):
        tf_qnets.export_tflite(qat, str(tmp_path / "m.tflite"), x, finer_inputs=value)
    assert not (tmp_path / "m.tflite").exists()


def test_finer_inputs_false_leaves_the_mul_out_and_auto_keeps_it_for_wide_layers_only(tmp_path):
    x = np.random.default_rng(0).uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    counts = {}
    for filters in (8, 128):      # 8 and 128 multiply-adds per value the projection reads
        qat = tf_qnets.quantize_model(_model(project_filters=filters), w_bits=3, a_bits=3,
                                      calibration_data=x, first_last="int8", verbose=0)
        for option in (True, False, "auto"):
            report = tf_qnets.export_tflite(qat, str(tmp_path / f"{filters}{option}.tflite"), x,
                                            finer_inputs=option)
            counts[filters, option] = _mul_count(report)
            # quantize_model snapped onto the default ("auto") lattice: that file is on it
            assert option != "auto" or report.off_lattice == []
    for filters in (8, 128):
        assert counts[filters, True] == counts[filters, False] + 1
    assert counts[8, "auto"] == counts[8, False] and counts[128, "auto"] == counts[128, True]


def test_snap_biases_can_use_the_lattice_of_a_file_without_finer_inputs(tmp_path, monkeypatch):
    monkeypatch.setattr("tf_qnets.keras2.api.snap_if_describable", lambda *args: None)
    x = np.random.default_rng(0).uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(_model(), w_bits=3, a_bits=3, calibration_data=x,
                                  first_last="int8", verbose=0)
    with pytest.raises(TypeError, match="`finer_inputs` must be True, False or"):
        tf_qnets.snap_biases(qat, finer_inputs=1)
    assert "quant_project" in tf_qnets.snap_biases(qat, finer_inputs=False).moved
    plain = tf_qnets.export_tflite(qat, str(tmp_path / "plain.tflite"), x, finer_inputs=False)
    finer = tf_qnets.export_tflite(qat, str(tmp_path / "finer.tflite"), x, finer_inputs=True)
    # the plain unit (weight codes stored 31 times finer) is a multiple of the finer one
    assert plain.off_lattice == [] and finer.off_lattice == []
    assert _projection_off_rate(qat, x, str(tmp_path / "p.tflite"), finer_inputs=False) <= 1e-4


def test_the_work_per_value_read_counts_filters_kernel_taps_and_strides():
    from tf_qnets.core.lowering import multiply_adds_per_input_value, wants_finer_input
    from tf_qnets.core.network import LayerDescription

    def layer(class_name, **config):
        return LayerDescription("l", class_name, config, {}, (None, 8, 8, 4))

    project = layer("Conv2D", filters=24, kernel_size=(1, 1), strides=(1, 1))
    strided = layer("Conv2D", filters=32, kernel_size=(3, 3), strides=(2, 2))
    depthwise = layer("DepthwiseConv2D", depth_multiplier=1, kernel_size=(3, 3), strides=(1, 1))
    dense = layer("Dense", units=1000)
    assert [multiply_adds_per_input_value(x) for x in (project, strided, depthwise, dense)] == [
        24, 72, 9, 1000]
    assert [wants_finer_input(x, "auto") for x in (project, strided, depthwise, dense)] == [
        False, False, False, True]
    assert wants_finer_input(project, True) and not wants_finer_input(dense, False)

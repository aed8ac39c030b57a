"""A linear kernel layer reading a saturating staircase reads it re-stored finer
(tf_qnets.export.emit.EmitContext.finer_input).

The staircase output keeps one int8 code per level (scale ``alpha``); the layer after it rounds
its int32 bias to ``alpha * s_w``. One requantizing MUL re-stores level ``v`` as ``m v - 128``
(``m = 255 // n``, scale ``alpha / m``), which changes no value and makes that unit ``m`` times
finer.
"""

import numpy as np
import pytest

import tf_qnets
from tf_qnets.export.emit import EmitContext
from tf_qnets.keras2.backend import keras
from tf_qnets.runtime import load_interpreter


def _model(project_scale=True):
    """A MobileNetV2-like block: expand to a ReLU staircase, then a linear projection + BN
    (``project_scale``: that BN has a ``gamma``)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.Conv2D(16, 1, use_bias=False, name="expand")(x)
    x = keras.layers.BatchNormalization(name="expand_bn")(x)
    x = keras.layers.ReLU(name="relu")(x)                 # aligned 3-bit staircase, levels 0..7
    x = keras.layers.Conv2D(8, 1, use_bias=False, name="project")(x)   # linear: int8 output
    x = keras.layers.BatchNormalization(scale=project_scale, name="project_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(x))


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
    tf_qnets.export_tflite(qat, path, x)
    interpreter = load_interpreter(path)
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    muls = [op for op in interpreter._get_ops_details()  # noqa: SLF001
            if op["op_name"] == "MUL" and "quant_relu_" in details[op["inputs"][0]]["name"]]
    assert len(muls) == 1
    staircase = details[muls[0]["inputs"][0]]["quantization"]
    finer = details[muls[0]["outputs"][0]]["quantization"]
    assert staircase[1] == 127 - 7                 # levels 0..7 at codes 120..127
    assert finer[1] == -128 and finer[0] == pytest.approx(staircase[0] / 36, rel=1e-5)


def test_the_finer_input_moves_fewer_projection_outputs(setting, tmp_path, monkeypatch):
    qat, x = setting
    finer = _projection_off_rate(qat, x, str(tmp_path / "finer.tflite"))
    monkeypatch.setattr(EmitContext, "finer_input", lambda self, tensor: tensor)
    plain = _projection_off_rate(qat, x, str(tmp_path / "plain.tflite"))
    # measured: 0.24% against 0.70% of the 131,072 outputs (the rest: roundings not located)
    assert finer < 0.5 * plain and plain > 0.004


def test_finer_inputs_must_be_a_bool(setting, tmp_path):
    qat, x = setting
    with pytest.raises(TypeError, match="`finer_inputs` must be a bool"):
        tf_qnets.export_tflite(qat, str(tmp_path / "m.tflite"), x, finer_inputs="yes")
    assert not (tmp_path / "m.tflite").exists()


def test_finer_inputs_false_leaves_the_mul_out(setting, tmp_path):
    qat, x = setting
    report = tf_qnets.export_tflite(qat, str(tmp_path / "m.tflite"), x, finer_inputs=False)
    default = tf_qnets.export_tflite(qat, str(tmp_path / "d.tflite"), x)
    count = lambda r: sum(n for name, _, n in r.ops if name == "MUL")  # noqa: E731
    assert count(default) == count(report) + 1


def test_snap_biases_can_use_the_lattice_of_a_file_without_finer_inputs(tmp_path, monkeypatch):
    monkeypatch.setattr("tf_qnets.keras2.api.snap_if_describable", lambda *args: None)
    x = np.random.default_rng(0).uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(_model(), w_bits=3, a_bits=3, calibration_data=x,
                                  first_last="int8", verbose=0)
    with pytest.raises(TypeError, match="`finer_inputs` must be a bool"):
        tf_qnets.snap_biases(qat, finer_inputs=1)
    assert "quant_project" in tf_qnets.snap_biases(qat, finer_inputs=False).moved
    plain = tf_qnets.export_tflite(qat, str(tmp_path / "plain.tflite"), x, finer_inputs=False)
    finer = tf_qnets.export_tflite(qat, str(tmp_path / "finer.tflite"), x)
    # the plain unit (weight codes stored 31 times finer) is a multiple of the finer one
    assert plain.off_lattice == [] and finer.off_lattice == []
    assert _projection_off_rate(qat, x, str(tmp_path / "p.tflite"), finer_inputs=False) <= 1e-4

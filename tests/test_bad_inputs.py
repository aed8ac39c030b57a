"""The catalogue of bad inputs (issue 7, requirement 2): one table, one test.

Every row is a mistake a user can make. Each must be answered by the listed exception
whose message names the argument (or the layer) and says what is allowed, raised from
tf_qnets code itself: the innermost traceback frame is in the ``tf_qnets`` package and
no frame of the printed traceback (chained exceptions included) lies inside TensorFlow.
Row-by-row details of several of these live in test_core_errors.py and
test_export_errors.py; this table pins the common contract for all of them.
"""

import os
import re
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.keras2 import api as keras2_api  # noqa: E402
from tf_qnets.keras2.backend import keras, tf  # noqa: E402
from tf_qnets.core.levels import LevelSet, activation_levels, weight_levels  # noqa: E402
from conftest import build_subclassed  # noqa: E402

PACKAGE_DIR = os.path.dirname(os.path.abspath(tf_qnets.__file__))
TF_DIRS = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (tf, keras))


def dense_model(poison=None):
    """Input(4) - first Dense - ReLU - middle Dense - last Dense; ``poison`` goes into middle's kernel."""
    inputs = keras.Input((4,), name="x")
    x = keras.layers.Dense(6, name="first")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Dense(5, name="middle")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="last")(x))
    if poison is not None:
        kernel, bias = model.get_layer("middle").get_weights()
        kernel[2, 3] = poison
        model.get_layer("middle").set_weights([kernel, bias])
    return model


def keras3_model():
    import keras as keras3

    return keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])


def subclassed_model():
    return build_subclassed(features=4)


def nested_model():
    inner = keras.Sequential([keras.layers.Dense(4, input_shape=(4,))], name="backbone")
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="first")(inputs)
    x = inner(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="last")(x))


class Resources:
    """Expensive objects built once per module, on first use."""

    def __init__(self, folder):
        self.folder = folder
        self._qat = None
        self._tflite = None

    @property
    def qat(self):
        if self._qat is None:
            self._qat = tf_qnets.quantize_model(dense_model(), w_bits=2, first_last="low_bit",
                                                verbose=0)
        return self._qat

    @property
    def tflite_bytes(self):
        """A valid (float) TFLite flatbuffer of a tiny model, to truncate."""
        if self._tflite is None:
            function = tf.function(lambda x: tf.nn.relu(x * 2.0 + 1.0)).get_concrete_function(
                tf.TensorSpec([1, 4], tf.float32))
            self._tflite = tf.lite.TFLiteConverter.from_concrete_functions([function]).convert()
        return self._tflite

    def file(self, name, contents):
        path = os.path.join(self.folder, name)
        with open(path, "wb") as handle:
            handle.write(contents)
        return path

    def lambda_model_file(self, suffix):
        inputs = keras.Input((3,))
        outputs = keras.layers.Lambda(lambda t: t * 2.0, name="code")(inputs)
        path = os.path.join(self.folder, "lambda" + suffix)
        keras.Model(inputs, outputs).save(path)
        return path


@pytest.fixture(scope="module")
def resources(tmp_path_factory):
    return Resources(str(tmp_path_factory.mktemp("bad_inputs")))


def quantize(**kwargs):
    model = kwargs.pop("model", None) or dense_model()
    return lambda r: tf_qnets.quantize_model(model, verbose=0, **kwargs)


def quantize_lazy(make_model, **kwargs):
    return lambda r: tf_qnets.quantize_model(make_model(), verbose=0, **kwargs)


def export(representative=None, path="m.tflite", model="qat"):
    def run(r):
        target = os.path.join(r.folder, path) if path is not None else r.folder
        qat = r.qat if model == "qat" else dense_model()
        data = representative if representative is not None else np.zeros((8, 4), "float32")
        return tf_qnets.export_tflite(qat, target, data)
    return run


def inspect_bytes(make_bytes):
    return lambda r: tf_qnets.inspect_tflite(r.file("bad.tflite", make_bytes(r)))


def read_only_export(r):
    from tf_qnets.export import convert

    real = convert.os.access
    convert.os.access = lambda path, mode: False
    try:
        return export()(r)
    finally:
        convert.os.access = real


# (id, call(resources), exception type, regex the message must match)
CASES = [
    # --- bit widths -----------------------------------------------------------------------
    ("w_bits=0", quantize(w_bits=0), ValueError, r"`w_bits` must be a bit width from 1 to 8"),
    ("w_bits=9", quantize(w_bits=9), ValueError, r"`w_bits` must be a bit width from 1 to 8"),
    ("a_bits=-1", quantize(w_bits=3, a_bits=-1), ValueError, r"`a_bits` must be a bit width from 1 to 8"),
    ("w_bits=2.5", quantize(w_bits=2.5), TypeError, r"`w_bits` must be an int bit width \(1\.\.8\)"),
    ("w_bits='3'", quantize(w_bits="3"), TypeError, r"`w_bits` must be an int bit width"),
    ("w_bits=True", quantize(w_bits=True), TypeError, r"`w_bits` must be an int bit width"),
    ("a_bits=2.0", quantize(w_bits=3, a_bits=2.0), TypeError, r"`a_bits` must be an int bit width"),
    ("per_layer w_bits=12", quantize(w_bits=3, per_layer={"middle": {"w_bits": 12}}), ValueError,
     r"per_layer\['middle'\]\['w_bits'\].*1 to 8"),
    ("weight_levels(0)", lambda r: weight_levels(0), ValueError, r"`w_bits` must be from 1 to 8"),
    ("activation_levels('4')", lambda r: activation_levels("4"), TypeError,
     r"`a_bits` must be an int from 1 to 8"),
    # --- level sets -----------------------------------------------------------------------
    ("levels unsorted", quantize(w_bits=[1, 0, -1]), ValueError,
     r"`w_bits` must be sorted in increasing order.*\[-1, 0, 1\]"),
    ("levels duplicates", quantize(w_bits=[-1, 0, 0, 1]), ValueError,
     r"`w_bits` contains duplicates.*must be distinct"),
    ("levels non-integer", quantize(w_bits=[-1, 0.5, 1]), TypeError, r"`w_bits` must contain integers only"),
    ("levels strings", quantize(w_bits=3, a_bits=["0", "1"]), TypeError, r"`a_bits` must contain integers only"),
    ("levels too long", quantize(w_bits=list(range(-128, 129))), ValueError,
     r"`w_bits` has 257 levels; at most 256"),
    ("levels span > 255", quantize(w_bits=[-200, 0, 200]), ValueError, r"`w_bits` must span at most 255"),
    ("levels single", quantize(w_bits=[3]), ValueError, r"`w_bits` needs at least two levels"),
    ("LevelSet unsorted", lambda r: LevelSet((1, 0)), ValueError, r"`levels` must be sorted"),
    ("LevelSet not a sequence", lambda r: LevelSet(3), TypeError,
     r"`levels` must be a sorted sequence of distinct integers"),
    # --- the model ------------------------------------------------------------------------
    ("Keras 3 model to the Keras 2 path", lambda r: keras2_api.quantize_model(keras3_model(), 3),
     TypeError, r"`model` is a Keras 3 model.*tf_keras"),
    ("Keras 3 model to export", lambda r: tf_qnets.export_tflite(keras3_model(), os.path.join(r.folder, "k3.tflite"), None),
     TypeError, r"`qat_model` was not produced by tf_qnets.quantize_model"),
    ("not a model", quantize_lazy(lambda: keras.layers.Dense(2)), TypeError,
     r"`model` must be a tf_keras Sequential or Functional model"),
    ("subclassed model", quantize_lazy(subclassed_model), TypeError,
     r"`model` is a subclassed model \(Net\).*Functional"),
    ("nested model", quantize_lazy(nested_model), ValueError, r"'backbone' is a nested model"),
    ("already quantized", lambda r: tf_qnets.quantize_model(r.qat, w_bits=3), ValueError,
     r"`model` is already quantized.*pass the original float model"),
    ("per_layer unknown name", quantize(w_bits=3, per_layer={"midle": {"w_bits": 2}}), ValueError,
     r"`per_layer` names layer 'midle'.*Did you mean \['middle'"),
    ("exclude unknown name", quantize(w_bits=3, exclude=["nope"]), ValueError,
     r"`exclude` names layer 'nope'"),
    ("NaN weights", quantize_lazy(lambda: dense_model(np.nan), w_bits=3, first_last="low_bit"),
     ValueError, r"Layer 'middle': its kernel contains NaN or Inf.*finite weights"),
    ("Inf weights", quantize_lazy(lambda: dense_model(-np.inf), w_bits=3, first_last="low_bit"),
     ValueError, r"Layer 'middle': its kernel contains NaN or Inf.*finite weights"),
    # --- calibration data -----------------------------------------------------------------
    ("calibration missing", quantize(w_bits=3, a_bits=3), ValueError,
     r"`calibration_data` is required"),
    ("calibration empty", quantize_lazy(
        dense_model, w_bits=3, a_bits=3,
        calibration_data=tf.data.Dataset.from_tensor_slices(np.zeros((0, 4), "float32")).batch(4)),
     ValueError, r"`calibration_data` is empty"),
    ("calibration empty array", quantize(w_bits=3, a_bits=3, calibration_data=np.zeros((0, 4), "float32")),
     ValueError, r"`calibration_data`"),
    ("calibration mis-shaped", quantize(w_bits=3, a_bits=3, calibration_data=np.zeros((40, 5), "float32")),
     ValueError, r"`calibration_data` batches have shape \(32, 5\).*\(None, 4\)"),
    ("calibration list", quantize(w_bits=3, a_bits=3, calibration_data=[[0.0] * 4] * 8), TypeError,
     r"`calibration_data` must be a tf.data.Dataset"),
    # --- temperature schedule -------------------------------------------------------------
    ("schedule base=0", lambda r: tf_qnets.TemperatureScheduler(base=0), ValueError,
     r"`base` must be a finite temperature > 0"),
    ("schedule base<0", lambda r: tf_qnets.TemperatureScheduler(base=-5.0), ValueError,
     r"`base` must be a finite temperature > 0"),
    ("schedule base=NaN", lambda r: tf_qnets.TemperatureScheduler(base=float("nan")), ValueError,
     r"`base` must be a finite temperature > 0"),
    ("schedule base='10'", lambda r: tf_qnets.TemperatureScheduler(base="10"), TypeError,
     r"`base` must be a positive number"),
    ("schedule cap=0", lambda r: tf_qnets.TemperatureScheduler(cap=0.0), ValueError,
     r"`cap` must be a finite temperature > 0"),
    ("schedule f(epoch)=0", lambda r: tf_qnets.TemperatureScheduler(schedule=lambda e: 0.0).temperature_at(1),
     ValueError, r"`schedule\(epoch\)` must be a finite temperature > 0"),
    ("schedule not callable", lambda r: tf_qnets.TemperatureScheduler(schedule=5), TypeError,
     r"`schedule` must be a callable"),
    ("set_temperature T=-1", lambda r: tf_qnets.set_temperature(r.qat, weights=-1.0), ValueError,
     r"`weights temperature` must be a finite temperature > 0"),
    # --- export ---------------------------------------------------------------------------
    ("export float model", export(model="float"), TypeError,
     r"`qat_model` was not produced by tf_qnets.quantize_model"),
    ("export a path string as model", lambda r: tf_qnets.export_tflite("m.keras", "m.tflite", None),
     TypeError, r"`qat_model` must be a tf_keras"),
    ("representative wrong shape", export(representative=np.zeros((8, 5), "float32")), ValueError,
     r"`representative_data`.*shape"),
    ("representative text", export(representative=np.full((8, 4), "a")), TypeError,
     r"`representative_data` must hold .*dtype"),
    ("representative missing", lambda r: tf_qnets.export_tflite(r.qat, os.path.join(r.folder, "m.tflite"), None),
     ValueError, r"`representative_data` is required"),
    ("output folder missing", export(path="missing/m.tflite"), FileNotFoundError,
     r"`path` .*the folder .* does not exist"),
    ("output is a folder", export(path=None), IsADirectoryError, r"`path` .* is a folder; give a file name"),
    ("output not writable", read_only_export, PermissionError, r"`path` .* is not writable"),
    ("int4_weights='yes'", lambda r: tf_qnets.export_tflite(r.qat, "m.tflite", np.zeros((4, 4)), int4_weights="yes"),
     ValueError, r"`int4_weights` must be one of"),
    # --- inspect --------------------------------------------------------------------------
    ("tflite truncated", inspect_bytes(lambda r: r.tflite_bytes[: len(r.tflite_bytes) // 3]), ValueError,
     r"`path` .* is a corrupt TFLite file"),
    ("tflite header only", inspect_bytes(lambda r: r.tflite_bytes[:8]), ValueError,
     r"`path` .* is a corrupt TFLite file"),
    ("tflite garbage", inspect_bytes(lambda r: b"definitely not a flatbuffer"), ValueError,
     r"`path` .* is not a TFLite model"),
    ("tflite empty", inspect_bytes(lambda r: b""), ValueError, r"`path` .* is not a TFLite model"),
    ("tflite missing", lambda r: tf_qnets.inspect_tflite(os.path.join(r.folder, "none.tflite")),
     FileNotFoundError, r"`path`: no file at"),
    # --- loading --------------------------------------------------------------------------
    ("load missing path", lambda r: tf_qnets.load_model(os.path.join(r.folder, "none.keras")),
     FileNotFoundError, r"`path` .*no SavedModel folder, \.keras or \.h5 file"),
    ("load path not a path", lambda r: tf_qnets.load_model(3), TypeError, r"`path` must be a file or folder path"),
    ("load .keras with Lambda", lambda r: tf_qnets.load_model(r.lambda_model_file(".keras")), ValueError,
     r"`path` .* contains Python code.*never executes code"),
    ("load .h5 with Lambda", lambda r: tf_qnets.load_model(r.lambda_model_file(".h5")), ValueError,
     r"`path` .* contains Python code.*never executes code"),
]


def _frames(error):
    """Every traceback frame that Python would print for ``error``, chained exceptions included."""
    frames = []
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        frames.extend(traceback.extract_tb(error.__traceback__))
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return frames


def test_the_catalogue_has_no_duplicate_ids():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 50


@pytest.mark.parametrize("call,error_type,pattern", [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_input_gets_a_clear_error(resources, call, error_type, pattern):
    with pytest.raises(error_type) as info:
        call(resources)
    assert info.type is error_type, f"expected exactly {error_type.__name__}, got {info.type.__name__}"
    message = str(info.value)
    assert "\n" not in message.strip(), "messages are one line"
    assert re.search(pattern, message), message
    frames = _frames(info.value)
    assert os.path.abspath(frames[-1].filename).startswith(PACKAGE_DIR + os.sep), (
        f"raised from {frames[-1].filename}, not from tf_qnets")
    inside_tf = [f.filename for f in frames if f.filename.startswith(TF_DIRS)]
    assert not inside_tf, f"TensorFlow frames in the traceback: {inside_tf}"

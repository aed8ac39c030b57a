"""Clear errors for bad export input, and atomic writes (issue 3, requirement 8)."""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402
from tf_qnets.export import ExportError, export_tflite, inspect_tflite  # noqa: E402
from tf_qnets.export import exporter  # noqa: E402


def float_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.layers.Conv2D(3, 3, activation="relu", input_shape=(6, 6, 1), name="c1"),
        keras.layers.Conv2D(4, 3, activation="relu", name="c2"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(2, name="out"),
    ])


@pytest.fixture(scope="module")
def qat():
    x = np.random.default_rng(0).uniform(0, 1, (16, 6, 6, 1)).astype("float32")
    return tf_qnets.quantize_model(float_model(), 2, 2, calibration_data=x, first_last="int8",
                                   verbose=0)


def data(n=8, shape=(6, 6, 1), dtype="float32"):
    return np.random.default_rng(1).uniform(0, 1, (n,) + shape).astype(dtype)


def test_model_not_from_quantize_model_is_rejected(tmp_path):
    with pytest.raises(TypeError, match="quantize_model"):
        export_tflite(float_model(), str(tmp_path / "m.tflite"), data())


def test_non_model_is_rejected(tmp_path):
    with pytest.raises(TypeError, match="qat_model"):
        export_tflite("model.keras", str(tmp_path / "m.tflite"), data())


def test_representative_data_of_wrong_shape_is_rejected(qat, tmp_path):
    with pytest.raises(ValueError, match="representative_data.*shape"):
        export_tflite(qat, str(tmp_path / "m.tflite"), data(shape=(5, 6, 1)))


def test_representative_data_of_wrong_dtype_is_rejected(qat, tmp_path):
    text = np.full((4, 6, 6, 1), "a")
    with pytest.raises(TypeError, match="representative_data"):
        export_tflite(qat, str(tmp_path / "m.tflite"), text)


def test_missing_representative_data_is_rejected(qat, tmp_path):
    with pytest.raises(ValueError, match="representative_data"):
        export_tflite(qat, str(tmp_path / "m.tflite"), None)


def test_bad_int4_option_is_rejected(qat, tmp_path):
    with pytest.raises(ValueError, match="int4_weights"):
        export_tflite(qat, str(tmp_path / "m.tflite"), data(), int4_weights="yes")


def test_unwritable_path_is_rejected_before_converting(qat, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_tflite(qat, str(tmp_path / "missing" / "m.tflite"), data())
    with pytest.raises(IsADirectoryError, match="folder"):
        export_tflite(qat, str(tmp_path), data())


def test_read_only_folder_is_rejected(qat, tmp_path, monkeypatch):
    # Root ignores permission bits, so simulate a read-only folder at the os.access level.
    from tf_qnets.export import convert

    monkeypatch.setattr(convert.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match="not writable"):
        export_tflite(qat, str(tmp_path / "m.tflite"), data())


def test_failed_conversion_keeps_the_old_file_and_leaves_no_partial_file(qat, tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old contents")

    def broken(*args, **kwargs):
        raise ExportError("TFLite conversion failed: simulated")

    monkeypatch.setattr(exporter, "convert_function", broken)
    with pytest.raises(ExportError, match="simulated"):
        export_tflite(qat, str(path), data())
    assert path.read_bytes() == b"old contents"
    assert sorted(os.listdir(tmp_path)) == ["m.tflite"]


def test_failed_write_removes_the_temporary_file(tmp_path, monkeypatch):
    from tf_qnets.export import convert

    target = tmp_path / "m.tflite"
    target.write_bytes(b"old")

    def failing_replace(source, destination):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(convert.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        convert.write_atomic(str(target), b"new bytes")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.tflite"]


def test_successful_export_replaces_the_old_file(qat, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old contents")
    report = export_tflite(qat, str(path), data())
    assert path.read_bytes()[4:8] == b"TFL3"
    assert report.size_bytes == path.stat().st_size
    assert sorted(os.listdir(tmp_path)) == ["m.tflite"]


@pytest.mark.parametrize("contents", [b"", b"not a model at all", b"\x1c\x00\x00\x00TFL3" + b"\x00" * 5])
def test_inspect_rejects_a_corrupt_file(tmp_path, contents):
    path = tmp_path / "bad.tflite"
    path.write_bytes(contents)
    with pytest.raises(ValueError, match="corrupt|not a TFLite"):
        inspect_tflite(str(path))


def test_inspect_rejects_a_truncated_model(qat, tmp_path):
    good = tmp_path / "good.tflite"
    export_tflite(qat, str(good), data())
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt"):
        inspect_tflite(str(truncated))


def test_inspect_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        inspect_tflite(str(tmp_path / "none.tflite"))


def test_an_unknown_quantizer_type_is_refused_naming_the_layer(tmp_path):
    """A quantizer export cannot lower (here tfmot's 4-bit LastValue on the int8 first layer)
    raises instead of being written as if it were int8."""
    from tf_qnets.keras2 import tfmot as quantizers

    x = data(16)
    model = tf_qnets.quantize_model(float_model(), 2, 2, calibration_data=x, first_last="int8",
                                    verbose=0)
    wrapper = model.get_layer("quant_c1")
    weight, _, variables = wrapper._weight_vars[0]
    wrapper._weight_vars[0] = (weight, quantizers.LastValueQuantizer(
        num_bits=4, per_axis=False, symmetric=True, narrow_range=True), variables)
    target = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=r"'quant_c1'.*LastValueQuantizer \(4 bits\) cannot be exported"):
        export_tflite(model, str(target), x)
    assert not target.exists()


def _normalized_model(mean, variance, features=False):
    """Pixels in [0, 255] -> Rescaling -> Normalization -> a small CNN (EfficientNet's front);
    ``features``: a Normalization of 3 features in front of Dense layers."""
    keras.utils.set_random_seed(0)
    if features:
        inputs = keras.Input((3,))
        x = keras.layers.Normalization(mean=mean, variance=variance, name="norm")(inputs)
        x = keras.layers.Dense(4, activation="relu", name="c1")(x)
        x = keras.layers.Dense(4, activation="relu", name="c2")(x)
        return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    x = keras.layers.Normalization(mean=mean, variance=variance, name="norm")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(x)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


@pytest.mark.parametrize("case", ["identity", "images", "features"])
def test_a_per_channel_normalization_is_named_only_where_the_file_rounds_it_twice(tmp_path, case):
    """ImageNet statistics on 4-D images (EfficientNet's front): a 1x1 depthwise convolution,
    nothing to say (tests/test_channel_affine.py). On 2-D features the file rounds the product
    and the sum to int8 where Keras rounds once; export says so, naming the layer. Mean 0 and
    variance 1 (``weights=None``) emit nothing, and nothing is said. ``quantize_model`` gives
    no "no quantizer" warning either way."""
    identity = case == "identity"
    mean, variance = ([0.0] * 3, [1.0] * 3) if identity else ([0.485, 0.456, 0.406], [0.05, 0.05, 0.05])
    shape = (16, 3) if case == "features" else (16, 8, 8, 3)
    images = np.random.default_rng(2).uniform(0, 255, shape).astype("float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qat = tf_qnets.quantize_model(_normalized_model(mean, variance, case == "features"), 4, 4,
                                      calibration_data=images, verbose=0)
        export_tflite(qat, str(tmp_path / "m.tflite"), images)
    messages = [str(w.message) for w in caught]
    assert not any("no quantizer" in m for m in messages)
    named = [m for m in messages if "norm' (Normalization" in m]
    assert len(named) == (1 if case == "features" else 0), messages


def test_a_grouped_convolution_is_refused_naming_the_layer(tmp_path):
    """RegNet's grouped convolutions: a clear error instead of a TensorFlow function lookup
    failure deep in the trace."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(4, 3, groups=2, activation="relu", name="grouped")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    images = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 4)).astype("float32")
    qat = tf_qnets.quantize_model(model, 4, 4, calibration_data=images, verbose=0)
    target = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=r"'quant_grouped' is a grouped convolution \(groups=2"):
        export_tflite(qat, str(target), images)
    assert not target.exists()


def test_an_operator_on_two_tensors_exports(tmp_path):
    """``x + y`` on two tensors (RegNet's residual sums are TFOpLambda additions) is emitted
    with both operands (it once lost the second: IndexError)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="b")(a)
    x = keras.layers.ReLU(name="relu")(a + b)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    images = np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 3)).astype("float32")
    qat = tf_qnets.quantize_model(model, 4, 4, calibration_data=images, verbose=0)
    report = export_tflite(qat, str(tmp_path / "m.tflite"), images, verify_data=images)
    assert "ADD" in {name for name, _, _ in report.ops}
    assert report.verification.agreement >= 0.9, report.verification


def test_a_long_list_of_blocking_layers_is_shortened():
    assert exporter._some(["a", "b", "c"], 2) == "a, b, ... (1 more)"
    assert exporter._some(["a", "b"], 2) == "a, b"

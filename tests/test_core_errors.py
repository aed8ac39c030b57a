"""Every user error of quantize_model gets a clear message that names the problem and the fix."""

import warnings

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras, tf
from conftest import build_subclassed  # noqa: E402


def _dense_model():
    inputs = keras.Input((4,), name="x")
    x = keras.layers.Dense(6, name="first")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Dense(5, name="middle")(x)
    outputs = keras.layers.Dense(2, name="last")(x)
    return keras.Model(inputs, outputs)


def _with_layer(layer, input_shape=(6, 4)):
    """first Conv1D - <layer> - Flatten - middle Dense - last Dense."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv1D(4, 1, name="first")(inputs)
    x = layer(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, name="middle")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="last")(x))


# --- the model itself ------------------------------------------------------------------------

def test_the_keras2_path_refuses_a_keras3_model_telling_how_to_build_it_with_tf_keras():
    import keras as keras3

    from tf_qnets.keras2.api import quantize_model as keras2_quantize_model

    assert keras3.__version__.startswith("3.")
    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    with pytest.raises(TypeError, match=r"Keras 3 model.*import tf_keras as keras"):
        keras2_quantize_model(model, w_bits=3)


def test_quantize_model_hands_a_keras3_model_to_the_keras3_path():
    import keras as keras3

    from tf_qnets.keras3.wrapper import QNetsWrapper as Keras3Wrapper

    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(8, activation="relu"),
                               keras3.layers.Dense(8, activation="relu"), keras3.layers.Dense(2)])
    qat = tf_qnets.quantize_model(model, w_bits=3, verbose=0)
    assert isinstance(qat, keras3.Model)
    assert [type(layer).__name__ for layer in qat.layers].count("QNetsWrapper") == 1
    assert any(isinstance(layer, Keras3Wrapper) for layer in qat.layers)


def test_something_that_is_not_a_model_is_rejected():
    with pytest.raises(TypeError, match="tf_keras Sequential or Functional model"):
        tf_qnets.quantize_model(keras.layers.Dense(3), w_bits=3)


def test_a_subclassed_model_is_rejected_with_the_functional_rewrite():
    model = build_subclassed(features=3)
    with pytest.raises(TypeError, match=r"subclassed model \(Net\).*Functional"):
        tf_qnets.quantize_model(model, w_bits=3)


def test_a_nested_model_is_rejected_naming_the_inner_model():
    inner = keras.Sequential([keras.layers.Dense(4, input_shape=(4,))], name="backbone")
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="first")(inputs)
    x = inner(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="last")(x))
    with pytest.raises(ValueError, match="'backbone' is a nested model"):
        tf_qnets.quantize_model(model, w_bits=3)


def test_an_unbuilt_model_is_rejected():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        tf_qnets.quantize_model(model, w_bits=3)


def test_an_already_quantized_model_is_rejected():
    qat = tf_qnets.quantize_model(_dense_model(), w_bits=3, first_last="low_bit", verbose=0)
    with pytest.raises(ValueError, match="already quantized.*pass the original float model"):
        tf_qnets.quantize_model(qat, w_bits=3)


@pytest.mark.parametrize("layer,name", [
    (keras.layers.SeparableConv1D(4, 3, padding="same", name="sep"), "sep"),
    (keras.layers.LSTM(4, return_sequences=True, name="lstm"), "lstm"),
    (keras.layers.Conv1DTranspose(4, 3, padding="same", name="deconv"), "deconv"),
])
def test_an_unsupported_layer_with_weights_stays_float_with_one_warning(layer, name):
    model = _with_layer(layer)
    with pytest.warns(UserWarning, match=rf"Layers '{name}' \(\w+\) have weights.*exclude=\['{name}'\]"):
        qat = tf_qnets.quantize_model(model, w_bits=3, first_last="low_bit", verbose=0)
    assert not isinstance(qat.get_layer(name), tf_qnets.QNetsWrapper)
    assert isinstance(qat.get_layer("quant_middle"), tf_qnets.QNetsWrapper)
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # excluded: kept float silently
        tf_qnets.quantize_model(model, w_bits=3, exclude=[name], first_last="low_bit", verbose=0)


def test_an_embedding_layer_stays_float_with_the_exclude_hint():
    inputs = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(10, 4, name="embed")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(4, name="first")(x)
    x = keras.layers.Dense(4, name="middle")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="last")(x))
    with pytest.warns(UserWarning, match=r"'embed' \(Embedding\).*exclude=\['embed'\]"):
        tf_qnets.quantize_model(model, w_bits=3, verbose=0)


def test_excluding_the_unsupported_layer_makes_the_model_quantizable():
    model = _with_layer(keras.layers.SeparableConv1D(4, 3, padding="same", name="sep"))
    qat = tf_qnets.quantize_model(model, w_bits=3, first_last="low_bit", exclude=["sep"],
                                  verbose=0)
    assert not isinstance(qat.get_layer("sep"), tf_qnets.QNetsWrapper)
    assert tf_qnets.count_quantizers(qat) == 3


# --- settings --------------------------------------------------------------------------------

def test_an_unknown_per_layer_name_is_rejected_with_suggestions():
    with pytest.raises(ValueError, match=r"`per_layer` names layer 'midle'.*Did you mean \['middle'"):
        tf_qnets.quantize_model(_dense_model(), w_bits=3, per_layer={"midle": {"w_bits": 2}})


def test_an_unknown_exclude_name_is_rejected():
    with pytest.raises(ValueError, match="`exclude` names layer 'nope'"):
        tf_qnets.quantize_model(_dense_model(), w_bits=3, exclude=["nope"])


def test_an_unknown_per_layer_setting_is_rejected():
    with pytest.raises(ValueError, match=r"per_layer\['middle'\].*unknown settings \['bits'\]"):
        tf_qnets.quantize_model(_dense_model(), w_bits=3, per_layer={"middle": {"bits": 2}})


def test_per_layer_must_be_a_dict():
    with pytest.raises(TypeError, match="`per_layer` must be a dict"):
        tf_qnets.quantize_model(_dense_model(), w_bits=3, per_layer=[("middle", 2)])


def test_exclude_must_be_a_list_of_names():
    with pytest.raises(TypeError, match="`exclude` must be a list"):
        tf_qnets.quantize_model(_dense_model(), w_bits=3, exclude="middle")


def test_a_bad_per_layer_bit_width_names_the_layer():
    with pytest.raises(ValueError, match=r"per_layer\['middle'\]\['w_bits'\]"):
        tf_qnets.quantize_model(_dense_model(), w_bits=3, per_layer={"middle": {"w_bits": 12}})


@pytest.mark.parametrize("kwargs,match", [
    ({"w_bits": 9}, "`w_bits` must be a bit width from 1 to 8"),
    ({"w_bits": [0, 2, 1]}, "`w_bits` must be sorted"),
    ({"w_bits": 3, "a_bits": 2.5}, "`a_bits` must be an int bit width"),
    ({"w_bits": 3, "first_last": "fp16"}, "`first_last` must be one of"),
    ({"w_bits": 3, "thresholds": "random"}, "`thresholds` must be one of"),
    ({"w_bits": 3, "gradient": "ste"}, "`gradient` must be one of"),
    ({"w_bits": 3, "weight_scheme": "log"}, "`weight_scheme` must be one of"),
    ({"w_bits": None, "a_bits": None}, "Nothing to quantize"),
])
def test_invalid_settings_name_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tf_qnets.quantize_model(_dense_model(), **kwargs)


def test_train_thresholds_must_be_a_bool():
    with pytest.raises(TypeError, match="`train_thresholds` must be a bool"):
        tf_qnets.quantize_model(_dense_model(), w_bits=3, train_thresholds="yes")


def test_nothing_quantizable_is_reported():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="only")(inputs))
    with pytest.raises(ValueError, match="No layer of the model is quantized"):
        tf_qnets.quantize_model(model, w_bits=3)


# --- calibration data ------------------------------------------------------------------------

def test_activation_quantization_without_calibration_data_is_rejected():
    with pytest.raises(ValueError, match="`calibration_data` is required.*train_ds.take"):
        tf_qnets.quantize_model(_dense_model(), w_bits=3, a_bits=3)


def test_int8_edges_also_need_calibration_data():
    with pytest.raises(ValueError, match="`calibration_data` is required"):
        tf_qnets.quantize_model(_dense_model(), w_bits=3, first_last="int8")


def test_calibration_data_of_the_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"`calibration_data` batches have shape \(32, 5\).*\(None, 4\)"):
        tf_qnets.quantize_model(_dense_model(), w_bits=3, a_bits=3,
                                calibration_data=np.zeros((40, 5), "float32"))


def test_unbatched_calibration_dataset_is_rejected_with_the_batch_hint():
    dataset = tf.data.Dataset.from_tensor_slices(np.zeros((8, 4), "float32"))
    with pytest.raises(ValueError, match=r"Batch the data, e\.g\. `ds\.batch\(32\)`"):
        tf_qnets.quantize_model(_dense_model(), w_bits=3, a_bits=3, calibration_data=dataset)


def test_empty_calibration_data_is_rejected():
    dataset = tf.data.Dataset.from_tensor_slices(np.zeros((0, 4), "float32")).batch(4)
    with pytest.raises(ValueError, match="`calibration_data` is empty"):
        tf_qnets.quantize_model(_dense_model(), w_bits=3, a_bits=3, calibration_data=dataset)


def test_calibration_data_of_an_unknown_type_is_rejected():
    with pytest.raises(TypeError, match="`calibration_data` must be a tf.data.Dataset"):
        tf_qnets.quantize_model(_dense_model(), w_bits=3, a_bits=3,
                                calibration_data=[[0.0] * 4] * 8)

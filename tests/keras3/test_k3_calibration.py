"""Calibration data: the forms quantize_model accepts, and clear errors for the others."""

import keras
import numpy as np
import pytest

from tf_qnets.keras3.calibration import calibration_batches


@pytest.fixture
def model():
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])


def _x(samples=70):
    return np.arange(samples * 5, dtype="float32").reshape(samples, 5)


@pytest.mark.parametrize("form", ["array", "tuple", "list_of_pairs", "generator"])
def test_every_accepted_form_gives_the_same_inputs(model, form):
    x = _x()
    data = {
        "array": lambda: x,
        "tuple": lambda: (x, np.zeros(len(x))),
        "list_of_pairs": lambda: [(x[i:i + 32], np.zeros(32)) for i in range(0, len(x), 32)],
        "generator": lambda: (x[i:i + 32] for i in range(0, len(x), 32)),
    }[form]()
    batches = calibration_batches(data, model)
    np.testing.assert_array_equal(np.concatenate(batches), x)
    assert all(len(batch) <= 32 for batch in batches)


def test_empty_batches_are_dropped(model):
    x = _x()
    batches = calibration_batches([x[:32], x[32:32], x[32:40], x[len(x):]], model)
    assert [len(batch) for batch in batches] == [32, 8]    # a slice past the end adds nothing


@pytest.mark.parametrize("data, error, match", [
    (np.zeros((0, 5), "float32"), ValueError, "is empty"),
    ([], ValueError, "is empty"),
    ([np.zeros((0, 5), "float32")] * 2, ValueError, "is empty"),
    (np.zeros((4, 6), "float32"), ValueError, r"expects inputs of shape \(None, 5\)"),
    (np.array([["a"] * 5]), TypeError, "numeric"),
    ({"x": np.zeros((4, 5))}, TypeError, "NumPy array of inputs"),
    (3, TypeError, "NumPy array of inputs"),
])
def test_bad_calibration_data_names_the_argument_and_the_fix(model, data, error, match):
    with pytest.raises(error, match=match):
        calibration_batches(data, model)


def _two_input_model():
    keras.utils.set_random_seed(0)
    image = keras.Input((4, 4, 1), name="image")
    meta = keras.Input((3,), name="meta")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(6, activation="relu", name="image_dense")(x)
    y = keras.layers.Dense(6, activation="relu", name="meta_dense")(meta)
    z = keras.layers.Concatenate(name="join")([x, y])
    z = keras.layers.Dense(8, activation="relu", name="head")(z)
    return keras.Model([image, meta], keras.layers.Dense(2, name="out")(z))


def _two_inputs(samples=70):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(samples, 4, 4, 1)).astype("float32"),
            (5.0 * rng.normal(size=(samples, 3))).astype("float32"))


@pytest.mark.parametrize("form", ["list", "tuple", "dict", "with_labels", "batches",
                                  "batches_with_labels", "dict_batches"])
def test_a_model_with_two_inputs_takes_lists_tuples_and_dicts(form):
    model = _two_input_model()
    image, meta = _two_inputs()
    labels = np.zeros(len(image))
    chunks = range(0, len(image), 32)
    data = {
        "list": lambda: [image, meta],
        "tuple": lambda: (image, meta),
        "dict": lambda: {"meta": meta, "image": image},
        "with_labels": lambda: ([image, meta], labels),
        "batches": lambda: [[image[i:i + 32], meta[i:i + 32]] for i in chunks],
        "batches_with_labels": lambda: [((image[i:i + 32], meta[i:i + 32]), labels[i:i + 32])
                                        for i in chunks],
        "dict_batches": lambda: ({"image": image[i:i + 32], "meta": meta[i:i + 32]}
                                 for i in chunks),
    }[form]()
    batches = calibration_batches(data, model)
    assert [len(batch[0]) for batch in batches] == [32, 32, 6]
    np.testing.assert_array_equal(np.concatenate([batch[0] for batch in batches]), image)
    np.testing.assert_array_equal(np.concatenate([batch[1] for batch in batches]), meta)


@pytest.mark.parametrize("data,match", [
    (lambda image, meta: image, "has 2 inputs \\['image', 'meta'\\]"),
    (lambda image, meta: {"image": image}, "no inputs named \\['meta'\\]"),
    (lambda image, meta: [image, meta[:10]], "different lengths \\[70, 10\\]"),
    (lambda image, meta: [meta, image], "for input 'image'"),
])
def test_two_input_mistakes_name_the_inputs(data, match):
    model = _two_input_model()
    with pytest.raises(ValueError, match=match):
        calibration_batches(data(*_two_inputs()), model)


def test_quantize_model_calibrates_each_input_branch_on_its_own_data():
    """The activation quantizer after each branch is fitted to that branch's outputs: with the
    'meta' input 5x larger than 'image', swapping the inputs would change the ranges."""
    from tf_qnets.keras3 import quantize_model

    model = _two_input_model()
    image, meta = _two_inputs()
    qat = quantize_model(model, 4, 4, calibration_data={"image": image, "meta": meta},
                         first_last="low_bit", verbose=0)
    branch = keras.Model(model.inputs, model.get_layer("meta_dense").output)
    meta_outputs = np.asarray(branch.predict([image, meta], verbose=0))
    quantizer = qat.get_layer("meta_dense").output_quantizer
    top = float(keras.ops.convert_to_numpy(quantizer.alpha)) * 15   # alpha times the top level
    assert 0.3 * meta_outputs.max() < top < 1.5 * meta_outputs.max()
    outputs = qat.predict({"image": image, "meta": meta}, verbose=0)
    assert np.all(np.isfinite(outputs)) and outputs.shape == (70, 2)

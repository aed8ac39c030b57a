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


@pytest.mark.parametrize("data, error, match", [
    (np.zeros((0, 5), "float32"), ValueError, "is empty"),
    ([], ValueError, "is empty"),
    (np.zeros((4, 6), "float32"), ValueError, r"expects inputs of shape \(None, 5\)"),
    (np.array([["a"] * 5]), TypeError, "numeric"),
    ({"x": np.zeros((4, 5))}, TypeError, "NumPy array of inputs"),
    (3, TypeError, "NumPy array of inputs"),
])
def test_bad_calibration_data_names_the_argument_and_the_fix(model, data, error, match):
    with pytest.raises(error, match=match):
        calibration_batches(data, model)

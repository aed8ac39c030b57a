"""Keras conventions: config round trips, registered names, string aliases, docstrings."""

import inspect

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras
from tf_qnets.keras2.aliases import get_quantizer, quantizer_aliases
from tf_qnets.keras2.configs import QNetsQuantizeConfig
from tf_qnets.keras2.int8 import Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.keras2.quantizer import QNetsQuantizer
from tf_qnets.keras2.schedule import TemperatureScheduler
from tf_qnets.keras2.summary import summary
from tf_qnets.keras2.tensorboard import QuantizerTensorBoard
from tf_qnets.keras2.wrapper import QNetsWrapper


def _examples():
    """One configured instance of every public serializable class except the wrapper."""
    return [
        QNetsQuantizer((-4, -2, -1, 0, 1, 2, 4), role="weights", gradient="wide",
                       train_thresholds=True),
        QNetsQuantizeConfig("kernel", QNetsQuantizer((-1, 0, 1)),
                            QNetsQuantizer((0, 1, 2, 3), role="activations")),
        Int8WeightQuantizer(per_axis=False),
        Int8OutputQuantizer(),
        TemperatureScheduler(base=5.0, per_step=True, cap=300.0, weight_cap=None, verbose=1),
        QuantizerTensorBoard("logs", update_freq=10),
    ]


@pytest.fixture(scope="module")
def wrapper():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Dense(4, activation="relu", input_shape=(3,), name="first"),
        keras.layers.Dense(4, activation="relu", name="middle"),
        keras.layers.Dense(2, name="last"),
    ])
    data = np.random.default_rng(0).random((8, 3), dtype=np.float32)
    qat = tf_qnets.quantize_model(model, w_bits=2, a_bits=2, calibration_data=data, verbose=0)
    return qat.get_layer("quant_middle")


@pytest.mark.parametrize("obj", _examples(), ids=lambda obj: type(obj).__name__)
def test_from_config_of_get_config_round_trips(obj):
    config = obj.get_config()
    clone = type(obj).from_config(config)
    assert type(clone) is type(obj)
    assert clone.get_config() == config


@pytest.mark.parametrize("obj", _examples(), ids=lambda obj: type(obj).__name__)
def test_public_classes_are_registered_under_the_package_name(obj):
    cls = type(obj)
    assert keras.utils.get_registered_name(cls) == f"tf_qnets>{cls.__name__}"
    assert keras.utils.get_registered_object(f"tf_qnets>{cls.__name__}") is cls


@pytest.mark.parametrize("obj", _examples()[:4], ids=lambda obj: type(obj).__name__)
def test_quantizers_and_configs_deserialize_without_a_scope(obj):
    restored = keras.utils.deserialize_keras_object(keras.utils.serialize_keras_object(obj))
    assert type(restored) is type(obj) and restored.get_config() == obj.get_config()


def test_wrapper_round_trips_and_is_registered(wrapper):
    assert keras.utils.get_registered_name(QNetsWrapper) == "tf_qnets>QNetsWrapper"
    config = wrapper.get_config()
    with tf_qnets.quantize_scope():
        clone = QNetsWrapper.from_config(config)
    assert type(clone) is QNetsWrapper
    clone.build(wrapper.input_shape)  # the inner layer's config records its build shape
    assert clone.get_config() == config
    assert [v.shape for v in clone.weights] == [v.shape for v in wrapper.weights]


def test_get_config_holds_constructor_arguments_only():
    for obj in _examples():
        parameters = set(inspect.signature(type(obj).__init__).parameters) - {"self"}
        assert set(obj.get_config()) <= parameters, type(obj).__name__


# --- string aliases ----------------------------------------------------------------------

@pytest.mark.parametrize("alias, levels, role, gradient", [
    ("qnet_w1", (-1, 1), "weights", "wide"),
    ("qnet_w2", (-1, 0, 1), "weights", "exact"),
    ("qnet_w3", (-4, -2, -1, 0, 1, 2, 4), "weights", "smooth"),
    ("qnet_w3_uniform", (-3, -2, -1, 0, 1, 2, 3), "weights", "smooth"),
    ("qnet_w4", tuple(range(-7, 8)), "weights", "smooth"),
    ("qnet_w8", tuple(range(-127, 128)), "weights", "smooth"),
    ("qnet_a1", (0, 1), "activations", "smooth"),
    ("qnet_a2", (0, 1, 2, 3), "activations", "smooth"),
    ("qnet_a3", tuple(range(8)), "activations", "smooth"),
    ("qnet_a8", tuple(range(256)), "activations", "smooth"),
    ("qnet_a1_signed", (-1, 1), "activations", "smooth"),
    ("qnet_a3_signed", (-3, -2, -1, 0, 1, 2, 3), "activations", "smooth"),
])
def test_alias_gives_the_paper_level_set(alias, levels, role, gradient):
    quantizer = get_quantizer(alias)
    assert isinstance(quantizer, QNetsQuantizer)
    assert quantizer.levels.levels == levels
    assert (quantizer.role, quantizer.gradient, quantizer.train_thresholds) == (role, gradient, False)


def test_every_alias_resolves_and_the_list_is_complete():
    names = quantizer_aliases()
    assert len(names) == 8 + 1 + 8 + 8
    assert all(isinstance(get_quantizer(name), QNetsQuantizer) for name in names)


def test_each_call_returns_a_new_quantizer():
    assert get_quantizer("qnet_w2") is not get_quantizer("qnet_w2")


def test_unknown_alias_suggests_close_names():
    with pytest.raises(ValueError, match=r"Unknown quantizer alias 'qnet_w33'.*Did you mean"):
        get_quantizer("qnet_w33")


def test_get_quantizer_passes_through_none_and_quantizers():
    quantizer = QNetsQuantizer((-1, 1))
    assert get_quantizer(None) is None
    assert get_quantizer(quantizer) is quantizer


def test_get_quantizer_accepts_a_serialized_config():
    original = get_quantizer("qnet_a2")
    restored = get_quantizer(keras.utils.serialize_keras_object(original))
    assert restored == original and restored is not original


def test_get_quantizer_rejects_other_types():
    with pytest.raises(TypeError, match="`identifier` must be a quantizer alias"):
        get_quantizer(3)


def test_get_quantizer_rejects_a_config_of_something_else():
    config = keras.utils.serialize_keras_object(keras.layers.Dense(2))
    with pytest.raises(TypeError, match="does not describe a quantizer"):
        get_quantizer(config)


# --- docstrings --------------------------------------------------------------------------

def _own_docstring(obj):
    """The object's own docstring (a class's, not one inherited from a base class)."""
    if inspect.isclass(obj):
        return obj.__dict__.get("__doc__") or ""
    return getattr(obj, "__doc__", None) or ""


def test_every_name_in_all_exists_and_has_a_docstring():
    assert tf_qnets.__all__, "tf_qnets.__all__ is empty"
    missing = [name for name in tf_qnets.__all__ if not hasattr(tf_qnets, name)]
    assert not missing, f"listed in __all__ but not defined: {missing}"
    undocumented = [name for name in tf_qnets.__all__
                    if (inspect.isclass(getattr(tf_qnets, name)) or callable(getattr(tf_qnets, name)))
                    and not _own_docstring(getattr(tf_qnets, name)).strip()]
    assert not undocumented, f"public names without a docstring: {undocumented}"


@pytest.mark.parametrize("obj", [summary, QuantizerTensorBoard, get_quantizer, quantizer_aliases],
                         ids=lambda obj: obj.__name__)
def test_names_of_this_feature_have_docstrings(obj):
    assert _own_docstring(obj).strip()


@pytest.mark.parametrize("module", ["tf_qnets.keras2.summary", "tf_qnets.keras2.tensorboard", "tf_qnets.keras2.aliases"])
def test_feature_modules_document_an_example_and_the_paper(module):
    import sys

    doc = sys.modules[module].__doc__
    assert "Example::" in doc
    if module != "tf_qnets.keras2.aliases":
        assert "arXiv:1911.09464" in doc


def test_the_suites_longest_first_order_names_only_existing_test_files():
    """A renamed slow file would silently lose its early start (tests/conftest.py)."""
    import pathlib

    from conftest import LONGEST_FILES_FIRST

    here = pathlib.Path(__file__).resolve().parent
    missing = [name for name in LONGEST_FILES_FIRST if not (here / name).is_file()]
    assert not missing and len(set(LONGEST_FILES_FIRST)) == len(LONGEST_FILES_FIRST), missing

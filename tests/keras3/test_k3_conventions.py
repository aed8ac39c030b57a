"""Keras 3 path conventions: the import rule, registered classes, config round trips, docstrings."""

import ast
import inspect
import os
import sys

import keras
import pytest

import tf_qnets.keras3 as k3
from tf_qnets.keras3 import QNetsQuantizer, QNetsWrapper, TemperatureScheduler

PACKAGE = os.path.dirname(k3.__file__)
ALLOWED = ("keras", "numpy", "tf_qnets.core", "tf_qnets.keras3")


def _imports(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module


@pytest.mark.parametrize("module", sorted(f for f in os.listdir(PACKAGE) if f.endswith(".py")))
def test_keras3_imports_keras_numpy_core_and_the_standard_library_only(module):
    for name in _imports(os.path.join(PACKAGE, module)):
        top = name.split(".")[0]
        allowed = any(name == a or name.startswith(a + ".") for a in ALLOWED)
        assert allowed or top in sys.stdlib_module_names, f"{module} imports {name}"


EXAMPLES = [
    QNetsQuantizer((-4, -2, -1, 0, 1, 2, 4), role="weights", gradient="wide",
                   train_thresholds=True, hard_forward_from=50.0, name="q"),
    TemperatureScheduler(base=5.0, per_step=True, cap=300.0, weight_cap=None, verbose=1),
]


@pytest.mark.parametrize("obj", EXAMPLES, ids=lambda obj: type(obj).__name__)
def test_from_config_of_get_config_round_trips(obj):
    clone = type(obj).from_config(obj.get_config())
    assert type(clone) is type(obj) and clone.get_config() == obj.get_config()


@pytest.mark.parametrize("cls", [QNetsQuantizer, QNetsWrapper, TemperatureScheduler])
def test_public_classes_are_registered_under_the_package_name(cls):
    assert keras.saving.get_registered_name(cls) == f"tf_qnets>{cls.__name__}"
    assert keras.saving.get_registered_object(f"tf_qnets>{cls.__name__}") is cls


def test_a_wrapper_deserializes_without_custom_objects():
    wrapper = QNetsWrapper(keras.layers.Dense(3, name="d"),
                           weight_quantizer=QNetsQuantizer((-1, 0, 1), name="wq"),
                           output_quantizer=None)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(wrapper))
    assert type(restored) is QNetsWrapper and restored.output_quantizer is None
    assert restored.weight_quantizer.get_config() == wrapper.weight_quantizer.get_config()


@pytest.mark.parametrize("name", k3.__all__)
def test_public_names_have_docstrings(name):
    obj = getattr(k3, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


@pytest.mark.parametrize("module", sorted(f[:-3] for f in os.listdir(PACKAGE) if f.endswith(".py")))
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"tf_qnets.keras3.{module}"), verbose=False)
    assert result.failed == 0

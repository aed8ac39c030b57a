"""The examples in the docstrings of tf_qnets.core run and print what they show."""

import doctest
import importlib
import pkgutil

import pytest

import tf_qnets.core

CORE_MODULES = sorted(info.name for info in pkgutil.iter_modules(tf_qnets.core.__path__))


@pytest.mark.parametrize("name", CORE_MODULES)
def test_core_docstring_examples_run(name):
    module = importlib.import_module(f"tf_qnets.core.{name}")
    result = doctest.testmod(module, verbose=False, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"

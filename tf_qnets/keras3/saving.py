"""``load_model`` for Keras 3: a saved quantization network back, on any supported backend.

A ``.keras`` file stores the quantizers' variables (alpha, beta, thresholds, temperature)
as ordinary weights and the layers as registered ``tf_qnets>...`` classes, so plain
``keras.saving.load_model`` reads it once this package is imported. :func:`load_model`
adds what users expect of tf_qnets: the classes registered whatever was imported, a clear
``FileNotFoundError`` / ``TypeError`` for a bad ``path``, and safe mode always on (a file
holding a ``Lambda`` layer's bytecode is refused with a ``ValueError`` that says why). A file
saved under one backend loads under the other (the variables are plain arrays):
tests/test_keras3_backends.py trains on JAX and checks the hard outputs under TensorFlow.

Example::

    from tf_qnets.keras3.saving import load_model
    qat = load_model("qat.keras")           # trained on JAX, loaded here under TensorFlow
"""

import os

import keras

# Registers every tf_qnets Keras 3 class with keras.saving.
import tf_qnets.keras3  # noqa: F401

__all__ = ["load_model"]


def load_model(path, compile=True, **kwargs):
    """Load a ``.keras`` file saved from a :func:`tf_qnets.keras3.quantize_model` result.

    Args:
      path: the ``.keras`` file.
      compile: restore the optimizer, loss and metrics the model was saved with.
      **kwargs: passed to ``keras.saving.load_model`` (``custom_objects`` for the user's own
        layers; turn ``safe_mode`` off only for files you trust).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a file path, got {type(path).__name__}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`path` {os.fspath(path)!r}: no .keras file there.")
    safe_mode = kwargs.pop("safe_mode", True)
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=safe_mode, **kwargs)
    except ValueError as error:
        if "arbitrary code execution" not in str(error) and "safe_mode" not in str(error):
            raise
        raise ValueError(
            f"`path` {os.fspath(path)!r} contains Python code (a Lambda layer or a function "
            "stored as bytecode); tf_qnets.load_model never executes code from a file (Keras "
            "safe mode). Rebuild that part of the model in Python, or load a file you trust "
            "with Keras' own `safe_mode` argument turned off.") from None

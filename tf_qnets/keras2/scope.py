"""``quantize_scope`` and ``load_model``: everything needed to deserialize a tf_qnets model."""

import contextlib
import os


from tf_keras.src.saving import serialization_lib

from tf_qnets.keras2 import tfmot
from tf_qnets.keras2.backend import keras

__all__ = ["custom_objects", "quantize_scope", "load_model"]


def custom_objects():
    """Name -> class for every serializable tf_qnets object (short and package-qualified names)."""
    from tf_qnets.keras2.batch_norm import FrozenStatisticsBatchNormalization
    from tf_qnets.keras2.configs import QNetsQuantizeConfig
    from tf_qnets.keras2.input_quantizer import InputQuantizer
    from tf_qnets.keras2.int8 import Int8OutputQuantizer, Int8WeightQuantizer
    from tf_qnets.keras2.quantizer import QNetsQuantizer
    from tf_qnets.keras2.wrapper import QNetsWrapper

    objects = {}
    for cls in (QNetsQuantizer, QNetsQuantizeConfig, QNetsWrapper, Int8WeightQuantizer,
                Int8OutputQuantizer, FrozenStatisticsBatchNormalization, InputQuantizer):
        objects[cls.__name__] = cls
        objects[f"tf_qnets>{cls.__name__}"] = cls
    objects["QuantizeLayer"] = tfmot.QuantizeLayer
    return objects


@contextlib.contextmanager
def quantize_scope(*extra_scopes):
    """Scope in which tf_qnets and tfmot objects deserialize (``load_model``, ``from_config``).

    Example::

        with tf_qnets.quantize_scope():
            model = tf_keras.models.load_model("qat.keras")
    """
    with tfmot.quantize_scope(*extra_scopes):
        with keras.utils.custom_object_scope(custom_objects()):
            yield


def load_model(path, compile=True, **kwargs):
    """Load a model saved from a quantize_model() result (SavedModel, ``.keras`` or ``.h5``).

    Loading never executes Python code from the file: Keras' safe mode is on for every
    format (tf_keras applies it to ``.keras`` only; here it also covers ``.h5`` and
    SavedModel), so a file holding a ``Lambda`` layer's bytecode is refused with a
    ``ValueError``. A missing ``path`` raises ``FileNotFoundError``.
    tf_keras does not restore the optimizer state (iterations, momentum slots) of a
    SavedModel; here it is restored from the SavedModel's variables, so training resumes
    exactly where it stopped, as with ``.keras`` and ``.h5``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a file or folder path, got {type(path).__name__}.")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"`path` {os.fspath(path)!r}: no SavedModel folder, .keras or .h5 file there.")
    safe_mode = kwargs.pop("safe_mode", True)
    try:
        with quantize_scope(), serialization_lib.SafeModeScope(safe_mode):
            model = keras.models.load_model(path, compile=compile, safe_mode=safe_mode, **kwargs)
    except ValueError as error:
        if "arbitrary code execution" not in str(error):
            raise
        raise ValueError(
            f"`path` {os.fspath(path)!r} contains Python code (a Lambda layer or a function "
            "stored as bytecode); tf_qnets.load_model never executes code from a file (Keras "
            "safe mode). Rebuild that part of the model in Python, or load a file you trust "
            "with Keras' own `safe_mode` argument turned off.") from None
    variables = os.path.join(os.fspath(path), "variables", "variables")
    if (compile and getattr(model, "optimizer", None) is not None
            and os.path.isfile(os.path.join(os.fspath(path), "saved_model.pb"))
            and os.path.isfile(variables + ".index")):
        # Restores the model's and the optimizer's variables (slots when they are created).
        model.load_weights(variables).expect_partial()
    return model

"""``quantize_scope`` and ``load_model``: everything needed to deserialize a tf_qnets model."""

import contextlib

from tensorflow_model_optimization.python.core.quantization.keras import quantize as tfmot_quantize

from tf_qnets._keras import keras

__all__ = ["custom_objects", "quantize_scope", "load_model"]


def custom_objects():
    """Name -> class for every serializable tf_qnets object (short and package-qualified names)."""
    from tf_qnets.configs import QNetsQuantizeConfig
    from tf_qnets.int8 import Int8OutputQuantizer, Int8WeightQuantizer
    from tf_qnets.quantizer import QNetsQuantizer
    from tf_qnets.wrapper import QNetsWrapper

    objects = {}
    for cls in (QNetsQuantizer, QNetsQuantizeConfig, QNetsWrapper, Int8WeightQuantizer,
                Int8OutputQuantizer):
        objects[cls.__name__] = cls
        objects[f"tf_qnets>{cls.__name__}"] = cls
    return objects


@contextlib.contextmanager
def quantize_scope(*extra_scopes):
    """Scope in which tf_qnets and tfmot objects deserialize (``load_model``, ``from_config``).

    Example::

        with tf_qnets.quantize_scope():
            model = tf_keras.models.load_model("qat.keras")
    """
    with tfmot_quantize.quantize_scope(*extra_scopes):
        with keras.utils.custom_object_scope(custom_objects()):
            yield


def load_model(path, compile=True, **kwargs):
    """Load a model saved from a quantize_model() result (SavedModel, ``.keras`` or ``.h5``).

    Uses Keras' safe mode where the format has one (no code is executed from the file).
    """
    with quantize_scope():
        return keras.models.load_model(path, compile=compile, **kwargs)

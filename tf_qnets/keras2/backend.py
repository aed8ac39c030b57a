"""The Keras of the Keras 2 path: the ``tf_keras`` package, and TensorFlow.

tensorflow-model-optimization works with Keras 2 only, so the Keras 2 path builds on
``tf_keras`` whatever ``tf.keras`` is in the user's process (Keras 3 by default on
TensorFlow >= 2.16, ``tf_keras`` when ``TF_USE_LEGACY_KERAS=1`` was set before TensorFlow
was imported). Nothing here changes that setting.

Every module of the Keras 2 path imports ``keras`` and ``tf`` from here.
"""

import tensorflow as tf
import tf_keras as keras

from tf_qnets.core.keras_version import is_keras3_object

__all__ = ["keras", "tf", "require_keras2_model"]

_KERAS3_HINT = (
    "This part of tf_qnets (the Keras 2 path, built on tensorflow-model-optimization) needs a "
    "Keras 2 model built with the `tf_keras` package. The top-level functions "
    "(`tf_qnets.quantize_model`, `export_tflite`, `summary`, `TemperatureScheduler`, ...) take "
    "Keras 3 models and route them to the Keras 3 path (tf_qnets.keras3, docs/keras3.md); "
    "call those. To use this Keras 2 function, build the model with `import tf_keras as "
    "keras` (or set TF_USE_LEGACY_KERAS=1 before importing TensorFlow and use `tf.keras`), then "
    "load your weights into it, e.g. `keras.models.load_model(path)` from tf_keras or "
    "`model.set_weights(...)`."
)


def require_keras2_model(model, argument="model"):
    """Raise a clear ``TypeError`` unless ``model`` is a tf_keras (Keras 2) model."""
    if isinstance(model, keras.Model):
        return model
    if is_keras3_object(model):
        raise TypeError(
            f"`{argument}` is a Keras 3 model ({type(model).__module__}.{type(model).__name__}). "
            + _KERAS3_HINT
        )
    raise TypeError(
        f"`{argument}` must be a tf_keras Sequential or Functional model, "
        f"got {type(model).__name__}."
    )

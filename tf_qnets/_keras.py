"""The one place that chooses Keras 2 (``tf_keras``) for tf_qnets and tfmot.

tensorflow-model-optimization works with Keras 2 only. TensorFlow >= 2.16 ships
Keras 3 as ``tf.keras`` unless ``TF_USE_LEGACY_KERAS=1`` is set *before*
TensorFlow is imported, so this module sets it (when TensorFlow has not been
imported yet) and always hands out the ``tf_keras`` package.

Every other module imports ``keras`` and ``tf`` from here.
"""

import os
import sys

if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf", "require_keras2_model"]

_KERAS3_HINT = (
    "tf_qnets (like tensorflow-model-optimization) needs a Keras 2 model built with "
    "the `tf_keras` package. Build it with `import tf_keras as keras` (or set "
    "TF_USE_LEGACY_KERAS=1 before importing TensorFlow and use `tf.keras`), then "
    "load your weights into it, e.g. `keras.models.load_model(path)` from tf_keras "
    "or `model.set_weights(...)`."
)


def _is_keras3_object(obj):
    module = type(obj).__module__ or ""
    return module.startswith("keras.") or module == "keras" or module.startswith("keras.src")


def require_keras2_model(model, argument="model"):
    """Raise a clear ``TypeError`` unless ``model`` is a tf_keras (Keras 2) model."""
    if isinstance(model, keras.Model):
        return model
    if _is_keras3_object(model):
        raise TypeError(
            f"`{argument}` is a Keras 3 model ({type(model).__module__}.{type(model).__name__}). "
            + _KERAS3_HINT
        )
    raise TypeError(
        f"`{argument}` must be a tf_keras Sequential or Functional model, "
        f"got {type(model).__name__}."
    )

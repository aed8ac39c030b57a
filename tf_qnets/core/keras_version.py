"""Which Keras an object belongs to, without importing any framework.

Keras 3 objects live in the ``keras`` package (``keras.src...``); tf_keras (Keras 2)
objects in ``tf_keras``; ``tf.keras`` is one of the two depending on
``TF_USE_LEGACY_KERAS``. The module of the object's class says which, so no Keras needs to
be imported to ask::

    >>> class Model: pass
    >>> Model.__module__ = "keras.src.models.functional"
    >>> is_keras3_object(Model())
    True
"""

__all__ = ["is_keras3_object"]


def is_keras3_object(obj):
    """True for an object of Keras 3 (the ``keras`` package), False for tf_keras and others."""
    module = type(obj).__module__ or ""
    return module == "keras" or module.startswith("keras.")

"""BatchNormalization that trains with the statistics it deploys with (Keras 3).

A Keras BatchNormalization normalises a training batch with that batch's own statistics
and keeps exponential moving averages of them for inference::

    training:   y = gamma * (x - mean_batch) / sqrt(var_batch + eps) + beta
    inference:  y = gamma * (x - moving_mean) / sqrt(moving_variance + eps) + beta
    moving_mean <- momentum * moving_mean + (1 - momentum) * mean_batch     (same for var)

During quantization-aware fine-tuning ``fit`` trains the soft network with batch
statistics while ``evaluate`` runs the hard one with moving averages that trail it, so the
model evaluates worse than it trained. :class:`FrozenStatisticsBatchNormalization`
normalises with ``moving_mean`` / ``moving_variance`` in training as well and never
updates them; ``gamma`` and ``beta`` stay trainable::

    always:     y = gamma * (x - moving_mean) / sqrt(moving_variance + eps) + beta

:func:`tf_qnets.keras3.quantize_model` (``batch_norm="frozen"``, the default) puts one in
place of every plain trainable BatchNormalization and measures its statistics on the
quantized network with ``calibration_data``. The Keras 2 path's class is
:class:`tf_qnets.keras2.batch_norm.FrozenStatisticsBatchNormalization`, with the same rule.

Example::

    >>> import keras
    >>> import numpy as np
    >>> from tf_qnets.keras3.batch_norm import FrozenStatisticsBatchNormalization
    >>> bn = FrozenStatisticsBatchNormalization()
    >>> x = np.full((4, 3), 5.0, "float32")
    >>> a = keras.ops.convert_to_numpy(bn(x, training=True))
    >>> bool(np.allclose(a, keras.ops.convert_to_numpy(bn(x, training=False))))
    True
"""

import keras

__all__ = ["FrozenStatisticsBatchNormalization", "freezable", "frozen_copy"]


@keras.saving.register_keras_serializable(package="tf_qnets")
class FrozenStatisticsBatchNormalization(keras.layers.BatchNormalization):
    """``BatchNormalization`` that uses its moving statistics in training too.

    Same arguments, weights and config as ``keras.layers.BatchNormalization``; only
    ``call`` differs: ``training`` is ignored for the normalisation, so the output is always
    ``gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta`` and ``fit``
    never updates the moving statistics. Gradients reach ``gamma``, ``beta`` and the input
    as usual.
    """

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


def freezable(layer):
    """True for a plain, trainable Keras 3 ``BatchNormalization`` (synchronized or not);
    user subclasses and already frozen layers are left as they are."""
    return type(layer) is keras.layers.BatchNormalization and layer.trainable


def frozen_copy(layer):
    """A fresh :class:`FrozenStatisticsBatchNormalization` with ``layer``'s configuration
    (weights are copied by the caller)."""
    return FrozenStatisticsBatchNormalization.from_config(layer.get_config())

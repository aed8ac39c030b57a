"""BatchNormalization that trains with the statistics it deploys with.

A BatchNormalization layer in Keras normalises a training batch with that batch's own
statistics and keeps exponential moving averages of them for inference::

    training:   y = gamma * (x - mean_batch) / sqrt(var_batch + eps) + beta
    inference:  y = gamma * (x - moving_mean) / sqrt(moving_variance + eps) + beta
    moving_mean <- momentum * moving_mean + (1 - momentum) * mean_batch     (same for var)

During quantization-aware fine-tuning the statistics of a layer's input keep moving:
the learned output scale ``alpha`` of the quantizer before it has no effect on the
training loss (the batch statistics divide it out), so Adam lets it drift, and the
kernel drifts with it. The moving averages then trail the network that training ends
with, and the activation thresholds after the layer turn small errors in them into
wrong levels: the model ``evaluate`` measures is worse than the one training reports.
docs/train.md ("BatchNormalization during fine-tuning") has the measurements.

:class:`FrozenStatisticsBatchNormalization` removes the difference at its root: it
normalises with ``moving_mean`` / ``moving_variance`` in training as well, and never
updates them. ``gamma`` and ``beta`` stay trainable. The statistics are those
:func:`tf_qnets.quantize_model` measured on the quantized network with
``calibration_data``, so the forward ``fit`` trains is the one ``evaluate`` and the
exported file compute, on one device, under ``tf.distribute`` (no batch statistics to
synchronise) and after resuming. This is the usual "freeze the BatchNormalization
statistics" step of quantization-aware training, taken from the first step.

Example::

    >>> import numpy as np
    >>> from tf_qnets.keras2.batch_norm import FrozenStatisticsBatchNormalization
    >>> bn = FrozenStatisticsBatchNormalization()
    >>> x = np.full((4, 3), 5.0, "float32")
    >>> bool(np.allclose(bn(x, training=True), bn(x, training=False)))
    True
"""

from tf_qnets.core.batch_norm import BATCH_NORM_MODES
from tf_qnets.keras2.backend import keras

__all__ = ["BATCH_NORM_MODES", "FrozenStatisticsBatchNormalization", "freezable", "frozen_copy"]

@keras.utils.register_keras_serializable(package="tf_qnets")
class FrozenStatisticsBatchNormalization(keras.layers.BatchNormalization):
    """``BatchNormalization`` that uses its moving statistics in training too.

    Same arguments and weights as ``keras.layers.BatchNormalization``; only ``call``
    differs: ``training`` is ignored for the normalisation, so the output is always
    ``gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta``, and the
    moving statistics are never updated by ``fit``. Gradients reach ``gamma``,
    ``beta`` and the input as usual.
    """

    def call(self, inputs, training=None):
        return super().call(inputs, training=False)


def freezable(layer):
    """True for a plain (or synchronized) Keras BatchNormalization that trains with batch
    statistics; user subclasses and already frozen layers are left as they are."""
    plain = (keras.layers.BatchNormalization,)
    sync = getattr(getattr(keras.layers, "experimental", None), "SyncBatchNormalization", None)
    if sync is not None:
        plain += (sync,)
    return type(layer) in plain and layer.trainable


def frozen_copy(layer):
    """A fresh :class:`FrozenStatisticsBatchNormalization` with ``layer``'s configuration
    (weights are copied by the caller)."""
    return FrozenStatisticsBatchNormalization.from_config(layer.get_config())

"""Re-estimate BatchNormalization statistics of a quantization network trained with
``quantize_model(..., batch_norm="batch")``.

With ``batch_norm="batch"`` every BatchNormalization normalises a training batch with
its own statistics and keeps exponential moving averages of them (momentum 0.99 by
default). Those averages describe the *soft* network of earlier steps; the model
evaluated and exported is the *hard* one after the last step.
:func:`recalibrate_batch_norm` replaces them by the exact statistics of the hard
network on a sample of training inputs, layer by layer in topological order (each
with every layer before it already recalibrated)::

    moving_mean     = E[x]                   over batch (and spatial) axes
    moving_variance = E[x^2] - E[x]^2        (population variance)

where ``x`` is the layer's input in inference mode. Gamma, beta and every other weight
stay as trained. The same re-estimation runs inside :func:`tf_qnets.quantize_model`
(before fine-tuning).

The default, ``batch_norm="frozen"``, needs no such step: the statistics measured by
``quantize_model`` are used, unchanged, in training and inference alike
(:mod:`tf_qnets.keras2.batch_norm`), and replacing them after training changes the network
that ``fit`` optimised; this function warns when asked to. How the two modes compare:
docs/train.md, "BatchNormalization during fine-tuning".

Example::

    qat = tf_qnets.quantize_model(model, w_bits=2, a_bits=2, calibration_data=ds.take(8),
                                  batch_norm="batch")
    qat.fit(train_ds, epochs=2, callbacks=[tf_qnets.TemperatureScheduler()])
    tf_qnets.recalibrate_batch_norm(qat, train_ds.take(32))
    qat.evaluate(test_ds)
"""

import warnings

from tf_qnets.core.batch_norm import check_max_batches, frozen_recalibration_message
from tf_qnets.keras2.backend import keras
from tf_qnets.keras2.batch_norm import FrozenStatisticsBatchNormalization
from tf_qnets.keras2.init import (
    batch_norms_after_quantized_layers,
    calibration_batches,
    reestimate_batch_norm_in,
)
from tf_qnets.keras2.wrapper import QNetsWrapper, unwrapped

__all__ = ["recalibrate_batch_norm"]


def recalibrate_batch_norm(model, data, max_batches=None, verbose=0):
    """Set the moving statistics of every BatchNormalization after a quantized layer.

    Args:
      model: a model returned by :func:`tf_qnets.quantize_model` (usually after ``fit``).
        Modified in place: only the ``moving_mean`` / ``moving_variance`` of those layers.
      data: training inputs, as for ``calibration_data``: a tf.data.Dataset of ``x`` or
        ``(x, y)`` batches, a NumPy array of inputs or an ``(x, y)`` tuple. A few thousand
        samples are enough.
      max_batches: read at most this many batches of a Dataset (None: all of them).
      verbose: 1 shows a progress bar (one step per BatchNormalization layer).

    Returns:
      The names of the recalibrated layers, in the order they were done (empty, with a
      warning, when the model has no BatchNormalization after a quantized layer).

    Raises:
      TypeError: ``model`` is not a Keras model, or ``data`` is of an unsupported type.
      ValueError: ``model`` has no tf_qnets quantizers, or ``data`` is empty or mis-shaped.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a tf_keras Model returned by tf_qnets.quantize_model, got "
            f"{type(model).__name__}.")
    if not any(isinstance(layer, QNetsWrapper) for layer in model.layers):
        raise ValueError(
            f"`model` ({model.name!r}) has no tf_qnets quantizers; recalibrate_batch_norm is "
            "for a model returned by tf_qnets.quantize_model.")
    check_max_batches(max_batches)
    batch_norms = batch_norms_after_quantized_layers(model)
    if not batch_norms:
        warnings.warn(
            f"recalibrate_batch_norm: model {model.name!r} has no BatchNormalization after a "
            "quantized layer; nothing to do.", UserWarning, stacklevel=2)
        return []
    frozen = [layer.name for layer in batch_norms
              if isinstance(unwrapped(layer), FrozenStatisticsBatchNormalization)]
    if frozen:
        warnings.warn(frozen_recalibration_message(frozen), UserWarning, stacklevel=2)
    batches = calibration_batches(data, model, "data", max_batches)
    progress = keras.utils.Progbar(len(batch_norms), unit_name="layer") if verbose else None
    for index, layer in enumerate(batch_norms):
        reestimate_batch_norm_in(model, layer, batches)
        if progress is not None:
            progress.update(index + 1)
    return [layer.name for layer in batch_norms]

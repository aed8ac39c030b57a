"""Re-estimate the BatchNormalization statistics of a Keras 3 quantization network trained
with ``quantize_model(..., batch_norm="batch")``.

With ``batch_norm="batch"`` every BatchNormalization normalises a training batch with its
own statistics and keeps exponential moving averages of them (momentum 0.99 by default).
Those averages describe the *soft* network of earlier steps; the model ``evaluate`` runs is
the *hard* one after the last step. :func:`recalibrate_batch_norm` replaces them by the
exact statistics of the hard network on a sample of training inputs, layer by layer in the
model's (topological) layer order, each with every layer before it already recalibrated::

    moving_mean     = E[x]                   over the batch (and spatial) axes
    moving_variance = E[(x - E[x])^2]        (population variance)

where ``x`` is the layer's input in inference mode
(:func:`tf_qnets.core.batch_norm.population_statistics`). Gamma, beta and every other
weight stay as trained. The same re-estimation runs inside
:func:`tf_qnets.keras3.quantize_model` on ``calibration_data`` (before fine-tuning).

The default, ``batch_norm="frozen"``, needs no such step: the statistics measured by
``quantize_model`` are used unchanged in training and inference
(:mod:`tf_qnets.keras3.batch_norm`), and replacing them after training changes the network
``fit`` optimised; this function warns when asked to.

Example::

    qat = quantize_model(model, w_bits=4, a_bits=4, calibration_data=x_train[:512],
                         batch_norm="batch")
    qat.fit(x_train, y_train, epochs=2, callbacks=[TemperatureScheduler()])
    recalibrate_batch_norm(qat, x_train[:2048])
    qat.evaluate(x_test, y_test)
"""

import warnings

import keras

from tf_qnets.core.batch_norm import check_max_batches, frozen_recalibration_message
from tf_qnets.keras3.api import is_quantized_model
from tf_qnets.keras3.batch_norm import FrozenStatisticsBatchNormalization
from tf_qnets.keras3.calibration import calibration_batches
from tf_qnets.keras3.init import batch_norms_after_quantized_layers, reestimate_batch_norms, unwrapped

__all__ = ["recalibrate_batch_norm"]


def recalibrate_batch_norm(model, data, max_batches=None, verbose=0):
    """Set the moving statistics of every BatchNormalization after a quantized layer.

    Args:
      model: a Keras 3 model returned by :func:`tf_qnets.keras3.quantize_model` (usually
        after ``fit``). Modified in place: only the ``moving_mean`` / ``moving_variance`` of
        those layers.
      data: training inputs, as for ``calibration_data``: a NumPy array of inputs, an
        ``(x, y)`` tuple, or an iterable of ``x`` or ``(x, y)`` batches. A few thousand
        samples are enough.
      max_batches: read at most this many batches (an array counts in batches of 32;
        None: all of them).
      verbose: 1 shows a progress bar (one step per BatchNormalization layer).

    Returns:
      The names of the recalibrated layers, in the order they were done (empty, with a
      warning, when the model has no BatchNormalization after a quantized layer).

    Raises:
      TypeError: ``model`` is not a Keras 3 model, or ``data`` is of an unsupported type.
      ValueError: ``model`` has no tf_qnets quantizers, ``data`` is empty or mis-shaped, or
        ``max_batches`` / ``verbose`` is not allowed.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a Keras 3 Model returned by tf_qnets.keras3.quantize_model, got "
            f"{type(model).__name__}.")
    if not is_quantized_model(model):
        raise ValueError(
            f"`model` ({model.name!r}) has no tf_qnets quantizers; recalibrate_batch_norm is "
            "for a model returned by tf_qnets.keras3.quantize_model.")
    check_max_batches(max_batches)
    if verbose not in (0, 1) or isinstance(verbose, float):
        raise ValueError(f"`verbose` must be 0 or 1, got {verbose!r}.")
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
    done = []

    def on_done(layer):
        done.append(layer.name)
        if progress is not None:
            progress.update(len(done))

    reestimate_batch_norms(model, batch_norms, batches, on_done, verbose)
    return done

"""Data-driven initialisation of a Keras 3 quantized model (method.md Sec. 3).

The numbers come from :mod:`tf_qnets.core.init_math` (numpy): for a tensor ``x`` with
levels ``Y``, ``(alpha, beta) = initial_scales(x, Y, method)`` (``beta = 1.25 max|y| / max|x|``,
``alpha = 1 / beta``, or the MSE scale for uniform thresholds) and the thresholds from
k-means of ``beta * x`` or halfway between levels.

* Weight quantizers read their (pretrained, float) kernel.
* Activation quantizers and the BatchNormalization layers after a quantized layer are
  calibrated in the model's layer order, each on what it sees with everything before it
  already quantized (hard staircases, inference mode): a BatchNormalization (a
  ``FrozenStatisticsBatchNormalization`` too) gets the moving mean and variance of its new
  inputs (the quantized kernels changed them); an activation quantizer its scales and
  thresholds from its (unquantized) activations.

Example::

    initialize_weight_quantizers(qat, specs)
    calibrate(qat, specs, calibration_batches(x_train[:256], qat))
"""

import keras
import numpy as np
from keras import ops

from tf_qnets.core.batch_norm import population_statistics
from tf_qnets.core.init_math import activation_thresholds, initial_scales, weight_thresholds
from tf_qnets.keras3.wrapper import QNetsWrapper

__all__ = [
    "batch_norms_after_quantized_layers",
    "calibrate",
    "initialize_weight_quantizers",
    "reestimate_batch_norm_in",
]

# Activation elements kept per quantizer for its statistics (k-means subsamples further).
MAX_SAMPLE_ELEMENTS = 2_000_000


def initialize_weight_quantizers(model, specs):
    """Scales and thresholds of every weight quantizer from its kernel."""
    for layer in model.layers:
        if not isinstance(layer, QNetsWrapper) or layer.weight_quantizer is None:
            continue
        kernel = ops.convert_to_numpy(layer.layer.kernel).astype(np.float64)
        if not np.all(np.isfinite(kernel)):
            raise ValueError(
                f"Layer {layer.name!r}: its kernel contains NaN or Inf values; `model` must have "
                f"finite weights (fix or retrain it, or keep the layer float with "
                f"`exclude=[{layer.name!r}]`).")
        quantizer = layer.weight_quantizer
        method = specs[layer.name].weight_thresholds
        alpha, beta = initial_scales(kernel, quantizer.levels, method)
        quantizer.assign(alpha, beta, weight_thresholds(beta * kernel, quantizer.levels, method))


def batch_norms_after_quantized_layers(model):
    """The BatchNormalization layers (frozen ones included) that follow a quantized layer in
    ``model``'s layer order: their float statistics no longer match their inputs."""
    found, downstream = [], False
    for layer in model.layers:
        downstream = downstream or isinstance(layer, QNetsWrapper)
        if downstream and isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


def _inputs_of(model, layer, batches):
    """``layer``'s input for each batch, computed in inference mode (eager calls, one batch
    at a time)."""
    probe = keras.Model(model.inputs[0], layer.input)
    for batch in batches:
        yield ops.convert_to_numpy(probe(batch, training=False))


def reestimate_batch_norm_in(model, layer, batches):
    """Set ``layer``'s moving mean and variance to the population statistics of its inputs
    in ``model`` (:func:`tf_qnets.core.batch_norm.population_statistics`), computed from the
    model inputs ``batches`` in inference mode: hard staircases before it."""
    mean, variance = population_statistics(_inputs_of(model, layer, batches), layer.axis)
    layer.moving_mean.assign(np.reshape(mean, layer.moving_mean.shape).astype("float32"))
    layer.moving_variance.assign(
        np.reshape(variance, layer.moving_variance.shape).astype("float32"))


def _activation_sample(model, layer, batches):
    """The wrapped layer's output before its output quantizer, flattened (a bounded sample)."""
    quantizer = layer.output_quantizer
    probe = keras.Model(model.inputs[0], layer.output)
    quantizer.bypass = True
    try:
        parts, kept = [], 0
        for batch in batches:
            values = ops.convert_to_numpy(probe(batch, training=False)).ravel()
            parts.append(values)
            kept += values.size
            if kept >= MAX_SAMPLE_ELEMENTS:
                break
    finally:
        quantizer.bypass = False
    return np.concatenate(parts).astype(np.float64)


def calibrate(model, specs, batches):
    """Calibrate the BatchNormalization layers after quantized layers and every activation
    quantizer, in layer order (see the module docstring)."""
    batch_norms = {id(layer) for layer in batch_norms_after_quantized_layers(model)}
    for layer in model.layers:
        if id(layer) in batch_norms:
            reestimate_batch_norm_in(model, layer, batches)
            continue
        if not isinstance(layer, QNetsWrapper) or layer.output_quantizer is None:
            continue
        sample = _activation_sample(model, layer, batches)
        if not np.all(np.isfinite(sample)):
            raise ValueError(
                f"Layer {layer.name!r}: calibration produced NaN/Inf activations; check the "
                "calibration data and the model's weights.")
        quantizer = layer.output_quantizer
        method = specs[layer.name].output_thresholds
        alpha, beta = initial_scales(sample, quantizer.levels, method)
        quantizer.assign(alpha, beta, activation_thresholds(beta * sample, quantizer.levels, method))

"""Data-driven initialisation of a Keras 3 quantized model (method.md Sec. 3).

The numbers come from :mod:`tf_qnets.core.init_math` (numpy): for a tensor ``x`` with
levels ``Y``, ``(alpha, beta) = initial_scales(x, Y, method)`` (``beta = 1.25 max|y| / max|x|``,
``alpha = 1 / beta``, or the MSE scale for uniform thresholds) and the thresholds from
k-means of ``beta * x`` or halfway between levels.

* Weight quantizers read their (pretrained, float) kernel.
* Activation quantizers and the BatchNormalization layers after a quantized layer are
  calibrated in the model's layer order, each on what it sees with everything before it
  already quantized (hard staircases, inference mode): a BatchNormalization gets the moving
  mean and variance of its new inputs (the quantized kernels changed them); an activation
  quantizer its scales and thresholds from its (unquantized) activations.

Example::

    initialize_weight_quantizers(qat, specs)
    calibrate(qat, specs, calibration_batches(x_train[:256], qat))
"""

import keras
import numpy as np
from keras import ops

from tf_qnets.core.init_math import activation_thresholds, initial_scales, weight_thresholds
from tf_qnets.keras3.propagation import live_bytes_per_sample, propagate
from tf_qnets.keras3.wrapper import QNetsWrapper

__all__ = ["calibrate", "initialize_weight_quantizers", "limit_calibration_batches"]

# Activation elements kept per quantizer for its statistics (k-means subsamples further).
MAX_SAMPLE_ELEMENTS = 2_000_000
# Live activations kept by the layer-by-layer walk (as on the Keras 2 path).
CALIBRATION_MEMORY_BYTES = 2 * 2**30


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


def _batch_norms_after_quantized_layers(model):
    found, downstream = [], False
    for layer in model.layers:
        downstream = downstream or isinstance(layer, QNetsWrapper)
        if downstream and isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


def _reestimate_batch_norm(layer, inputs):
    """moving_mean = E[x], moving_variance = E[x^2] - E[x]^2 over every axis but the
    normalised ones, accumulated batch by batch in float64."""
    count, total, squares, reduce = 0, 0.0, 0.0, None
    for batch in inputs:
        values = np.asarray(ops.convert_to_numpy(batch), np.float64)
        if reduce is None:
            axes = [a % values.ndim for a in np.atleast_1d(layer.axis)]
            reduce = tuple(i for i in range(values.ndim) if i not in axes)
        count += int(np.prod([values.shape[i] for i in reduce]))
        total = total + np.sum(values, axis=reduce)
        squares = squares + np.sum(np.square(values), axis=reduce)
    mean = total / count
    variance = np.maximum(squares / count - np.square(mean), 0.0)
    layer.moving_mean.assign(np.reshape(mean, layer.moving_mean.shape).astype("float32"))
    layer.moving_variance.assign(
        np.reshape(variance, layer.moving_variance.shape).astype("float32"))


def _activation_sample(outputs):
    """The outputs (before the output quantizer), flattened, at most MAX_SAMPLE_ELEMENTS."""
    parts, kept = [], 0
    for batch in outputs:
        values = ops.convert_to_numpy(batch).ravel()
        parts.append(values)
        kept += values.size
        if kept >= MAX_SAMPLE_ELEMENTS:
            break
    return np.concatenate(parts).astype(np.float64)


def limit_calibration_batches(model, batches, verbose=0):
    """The leading batches whose activations fit :data:`CALIBRATION_MEMORY_BYTES` during the
    layer-by-layer walk (at least one batch)."""
    per_sample = live_bytes_per_sample(model)
    if per_sample <= 0:
        return batches
    budget = max(1, int(CALIBRATION_MEMORY_BYTES // per_sample))
    kept, samples = [], 0
    for batch in batches:
        if kept and samples + len(batch) > budget:
            break
        kept.append(batch)
        samples += len(batch)
    if verbose and len(kept) < len(batches):
        total = sum(len(batch) for batch in batches)
        print(f"[tf_qnets] calibrating on the first {samples} of {total} samples "
              f"(activations of {per_sample / 2**20:.1f} MiB per sample; memory budget "
              f"{CALIBRATION_MEMORY_BYTES / 2**30:.0f} GiB)")
    return kept


def calibrate(model, specs, batches, verbose=0):
    """Calibrate the BatchNormalization layers after quantized layers and every activation
    quantizer, in topological order (see the module docstring), walking the model once
    (:func:`tf_qnets.keras3.propagation.propagate`)."""
    batch_norms = {id(layer) for layer in _batch_norms_after_quantized_layers(model)}
    quantized = {id(layer) for layer in model.layers
                 if isinstance(layer, QNetsWrapper) and layer.output_quantizer is not None}
    if not batch_norms and not quantized:
        return
    batches = limit_calibration_batches(model, batches, verbose)

    def visit(layer, inputs, compute):
        if id(layer) in batch_norms:
            _reestimate_batch_norm(layer, inputs)
            return compute()
        if id(layer) not in quantized:
            return compute()
        quantizer = layer.output_quantizer
        quantizer.bypass = True
        try:
            sample = _activation_sample(compute())
        finally:
            quantizer.bypass = False
        if not np.all(np.isfinite(sample)):
            raise ValueError(
                f"Layer {layer.name!r}: calibration produced NaN/Inf activations; check the "
                "calibration data and the model's weights.")
        method = specs[layer.name].output_thresholds
        alpha, beta = initial_scales(sample, quantizer.levels, method)
        quantizer.assign(alpha, beta, activation_thresholds(beta * sample, quantizer.levels, method))
        return compute()

    propagate(model, batches, visit)

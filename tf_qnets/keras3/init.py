"""Data-driven initialisation of a Keras 3 quantized model (method.md Sec. 3).

The numbers come from :mod:`tf_qnets.core.init_math` (numpy): for a tensor ``x`` with
levels ``Y``, ``(alpha, beta) = initial_scales(x, Y, method)`` (``beta = 1.25 max|y| / max|x|``,
``alpha = 1 / beta``, or the MSE scale for uniform thresholds) and the thresholds from
k-means of ``beta * x`` or halfway between levels.

* Weight quantizers read their (pretrained, float) kernel (the 8-bit ones of
  ``first_last="int8"`` take their range from the kernel at every call: nothing to set).
* Activation quantizers and the BatchNormalization layers after a quantized layer are
  calibrated in the model's layer order, each on what it sees with everything before it
  already quantized (hard staircases, inference mode): a BatchNormalization (a
  ``FrozenStatisticsBatchNormalization`` too) gets the moving mean and variance of its new
  inputs (the quantized kernels changed them); an activation quantizer its scales and
  thresholds from its (unquantized) activations, an 8-bit output quantizer
  (:class:`tf_qnets.keras3.int8.Int8OutputQuantizer`) its range ``[min(x, 0), max(x, 0)]``
  over all of them.

Example::

    initialize_weight_quantizers(qat, specs)
    calibrate(qat, specs, calibration_batches(x_train[:256], qat))
"""

import keras
import numpy as np
from keras import ops

from tf_qnets.core.calibration import CALIBRATION_MEMORY_BYTES, leading_batches
from tf_qnets.core.batch_norm import population_statistics
from tf_qnets.core.init_math import activation_thresholds, initial_scales, weight_thresholds
from tf_qnets.core.input_range import TIE_PRONE_OUTPUTS, tie_free_output_range
from tf_qnets.keras3.int8 import Int8OutputQuantizer
from tf_qnets.keras3.propagation import live_bytes_per_sample, propagate
from tf_qnets.keras3.quantizer import QNetsQuantizer
from tf_qnets.keras3.wrapper import QNetsWrapper

__all__ = [
    "batch_norms_after_quantized_layers",
    "calibrate",
    "initialize_weight_quantizers",
    "limit_calibration_batches",
    "reestimate_batch_norms",
]

# Activation elements kept per quantizer for its statistics (k-means subsamples further).
MAX_SAMPLE_ELEMENTS = 2_000_000


def initialize_weight_quantizers(model, specs):
    """Scales and thresholds of every weight quantizer from its kernel."""
    for layer in model.layers:
        if not isinstance(layer, QNetsWrapper) or not isinstance(
                layer.weight_quantizer, QNetsQuantizer):
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
        if downstream and isinstance(unwrapped(layer), keras.layers.BatchNormalization):
            found.append(layer)
    return found


def unwrapped(layer):
    """The layer a :class:`QNetsWrapper` wraps, else ``layer`` itself."""
    return layer.layer if isinstance(layer, QNetsWrapper) else layer


def reestimate_batch_norm(layer, inputs):
    """Set ``layer``'s moving mean and variance to the population statistics of ``inputs``
    (its input batches; :func:`tf_qnets.core.batch_norm.population_statistics`)."""
    layer = unwrapped(layer)
    mean, variance = population_statistics(
        (ops.convert_to_numpy(batch) for batch in inputs), layer.axis)
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


def _activation_range(outputs):
    """``(min, max)`` over every batch of ``outputs`` (for an 8-bit output range)."""
    low, high = np.inf, -np.inf
    for batch in outputs:
        values = ops.convert_to_numpy(batch)
        low, high = min(low, float(np.min(values))), max(high, float(np.max(values)))
    return np.array([low, high])


def limit_calibration_batches(model, batches, verbose=0):
    """The leading batches whose activations fit :data:`CALIBRATION_MEMORY_BYTES` during the
    layer-by-layer walk (:func:`tf_qnets.core.calibration.leading_batches`)."""
    return leading_batches(batches, live_bytes_per_sample(model), CALIBRATION_MEMORY_BYTES,
                           verbose)


def calibrate(model, specs, batches, verbose=0):
    """Calibrate the BatchNormalization layers after quantized layers and every activation
    quantizer, in topological order (see the module docstring), walking the model once
    (:func:`tf_qnets.keras3.propagation.propagate`)."""
    batch_norms = {id(layer) for layer in batch_norms_after_quantized_layers(model)}
    quantized = {id(layer) for layer in model.layers
                 if isinstance(layer, QNetsWrapper) and layer.output_quantizer is not None}
    if not batch_norms and not quantized:
        return
    batches = limit_calibration_batches(model, batches, verbose)

    def visit(layer, inputs, compute):
        if id(layer) in batch_norms:
            reestimate_batch_norm(layer, inputs)
        if id(layer) not in quantized:
            return compute()
        quantizer = layer.output_quantizer
        quantizer.bypass = True
        # scaled pixels and products lie on a lattice: their range keeps them off rounding ties
        on_lattice = type(layer.layer).__name__ in TIE_PRONE_OUTPUTS
        sample_of = (_activation_range
                     if isinstance(quantizer, Int8OutputQuantizer) and not on_lattice
                     else _activation_sample)
        try:
            sample = sample_of(compute())
        finally:
            quantizer.bypass = False
        if not np.all(np.isfinite(sample)):
            raise ValueError(
                f"Layer {layer.name!r}: calibration produced NaN/Inf activations; check the "
                "calibration data and the model's weights.")
        if isinstance(quantizer, Int8OutputQuantizer):
            quantizer.initialize_range(
                np.asarray(tie_free_output_range(sample)) if on_lattice else sample)
            return compute()
        method = specs[layer.name].output_thresholds
        alpha, beta = initial_scales(sample, quantizer.levels, method)
        quantizer.assign(alpha, beta, activation_thresholds(beta * sample, quantizer.levels, method))
        return compute()

    propagate(model, batches, visit)


def reestimate_batch_norms(model, layers, batches, on_done=None, verbose=0):
    """:func:`reestimate_batch_norm` of each of ``layers`` on its inputs in ``model``, computed
    from the model inputs ``batches`` in inference mode (hard staircases), in topological
    order with one walk of the model; ``on_done(layer)`` is called after each."""
    targets = {id(layer) for layer in layers}

    def visit(layer, inputs, compute):
        if id(layer) in targets:
            reestimate_batch_norm(layer, inputs)
            if on_done is not None:
                on_done(layer)
        return compute()

    propagate(model, limit_calibration_batches(model, batches, verbose), visit)

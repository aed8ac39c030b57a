"""Data-driven initialisation of a Keras 2 quantized model (method.md Sec. 3).

The maths (``beta = 1.25 p / max|x|``, ``alpha = 1 / beta``, k-means / uniform / MSE
thresholds) is ``tf_qnets.core.init_math``; this module feeds it: weights from each
kernel; activations from calibration data, layer by layer in topological order, each with
the quantizers before it already active (hard staircase), as in the paper; and the
BatchNormalization statistics re-estimated on the quantized network.
"""

import contextlib

import numpy as np

from tf_qnets.core.activation_sample import ActivationSample
from tf_qnets.core.calibration import CALIBRATION_MEMORY_BYTES, leading_batches
from tf_qnets.core.batch_norm import population_statistics
from tf_qnets.core.init_math import activation_thresholds, initial_scales, weight_thresholds
from tf_qnets.core.input_range import TIE_PRONE_OUTPUTS, tie_free_output_range
from tf_qnets.keras2 import tfmot
from tf_qnets.keras2.backend import keras, tf
from tf_qnets.tf.distribute import broadcast_from_first_replica
from tf_qnets.keras2.int8 import Int8OutputQuantizer, Int8WeightQuantizer, initialize_int8_weight_range
from tf_qnets.keras2.propagation import live_bytes_per_sample, propagate
from tf_qnets.keras2.quantizer import QNetsQuantizer
from tf_qnets.keras2.wrapper import QNetsWrapper, unwrapped

__all__ = [
    "initialize_weight_quantizers",
    "calibrate_activation_quantizers",
    "calibration_batches",
    "batch_norms_after_quantized_layers",
    "reestimate_batch_norm",
    "reestimate_batch_norm_in",
]



def _assign(variables, alpha, beta, thresholds):
    variables["alpha"].assign(alpha)
    variables["beta"].assign(beta)
    variables["thresholds"].assign(np.asarray(thresholds, dtype=np.float32))


def initialize_weight_quantizers(model, plans):
    """Initialise every low-bit weight quantizer from its (float, pretrained) kernel."""
    for layer in model.layers:
        if not isinstance(layer, QNetsWrapper):
            continue
        for weight, quantizer, variables in tfmot.weight_quantizer_variables(layer):
            kernel = weight.numpy()
            if not np.all(np.isfinite(kernel)):
                raise ValueError(
                    f"Layer {layer.layer.name!r}: its {tfmot.weight_name(layer, weight)} contains "
                    "NaN or Inf values; quantize a model with finite weights.")
            if isinstance(quantizer, Int8WeightQuantizer):
                initialize_int8_weight_range(quantizer, variables, kernel)
                continue
            method = plans[layer.layer.name].weight_thresholds
            alpha, beta = initial_scales(kernel, quantizer.levels, method)
            _assign(variables, alpha, beta, weight_thresholds(beta * kernel, quantizer.levels, method))


def calibration_batches(data, model, argument="calibration_data", max_batches=None):
    """Collect the model inputs of ``data`` (a tf.data.Dataset, array, or ``(x, y)`` tuple).

    Returns a list of input batches; raises a clear error for empty or mis-shaped data.
    """
    if isinstance(data, tf.data.Dataset):
        batches = []
        for element in data:
            if isinstance(element, (tuple, list)) and not (
                    len(model.inputs) > 1 and len(element) == len(model.inputs)):
                element = element[0]
            batches.append(element)
            if max_batches is not None and len(batches) >= max_batches:
                break
    elif isinstance(data, (np.ndarray, tf.Tensor)):
        array = np.asarray(data)
        batches = [array[i:i + 32] for i in range(0, len(array), 32)]
    elif isinstance(data, tuple) and len(data) in (2, 3) and isinstance(data[0], (np.ndarray, tf.Tensor)):
        return calibration_batches(np.asarray(data[0]), model, argument, max_batches)
    else:
        raise TypeError(
            f"`{argument}` must be a tf.data.Dataset (of x or (x, y) batches), a NumPy array of "
            f"inputs, or an (x, y) tuple; got {type(data).__name__}.")
    if not batches:
        raise ValueError(f"`{argument}` is empty; give a few batches of typical inputs.")
    expected = model.inputs[0].shape
    for batch in batches:
        if isinstance(batch, dict) or (isinstance(batch, (tuple, list)) and len(model.inputs) > 1):
            continue
        shape = tuple(np.shape(batch))
        if len(shape) != len(expected) or any(
                e is not None and e != s for e, s in zip(expected[1:], shape[1:])):
            raise ValueError(
                f"`{argument}` batches have shape {shape}, but the model expects inputs of shape "
                f"{tuple(expected)} (batch first). Batch the data, e.g. `ds.batch(32)`, and make "
                "sure it yields model inputs (or (inputs, labels)).")
        if not np.issubdtype(np.asarray(batch).dtype, np.number):
            raise TypeError(f"`{argument}` must hold numeric inputs, got dtype {np.asarray(batch).dtype}.")
    return batches


def batch_norms_after_quantized_layers(model):
    """Plain BatchNormalization layers that follow a quantized layer (their statistics drift)."""
    found, downstream = [], False
    for layer in model.layers:
        downstream = downstream or isinstance(layer, QNetsWrapper)
        if downstream and isinstance(unwrapped(layer), keras.layers.BatchNormalization):
            found.append(layer)
    return found



def layer_tensor_in(model, layer, which="input"):
    """``layer``'s input (or output) tensor in ``model``'s graph.

    ``quantize_model`` reuses the float layers it does not wrap, so such a layer has
    one call node per model it was built into; ``layer.input`` would be the first.
    """
    keys = getattr(model, "_network_nodes", set())
    for index in range(len(layer._inbound_nodes)):
        if f"{layer.name}_ib-{index}" in keys:
            return layer.get_input_at(index) if which == "input" else layer.get_output_at(index)
    return layer.input if which == "input" else layer.output


def reestimate_batch_norm(layer, inputs):
    """Set a BatchNormalization layer's moving mean/variance to those of ``inputs``.

    ``inputs`` is an iterable of the layer's input batches (computed with the quantizers
    before it active), read once, one batch at a time. Statistics are taken over every
    axis but the normalised ones (:func:`tf_qnets.core.batch_norm.population_statistics`).
    """
    layer = unwrapped(layer)
    mean, variance = population_statistics(inputs, layer.axis)
    layer.moving_mean.assign(np.reshape(mean, layer.moving_mean.shape).astype(np.float32))
    layer.moving_variance.assign(
        np.reshape(variance, layer.moving_variance.shape).astype(np.float32))
    if tf.distribute.has_strategy():
        # The statistics are per-replica (sync-on-read) variables: reading them in
        # cross-replica context, as the calibration of the next layers does, averages the
        # workers' values. Every worker takes the first replica's, as for the quantizers.
        broadcast_from_first_replica([layer.moving_mean, layer.moving_variance])


def reestimate_batch_norm_in(model, layer, batches):
    """:func:`reestimate_batch_norm` of ``layer`` on its inputs in ``model``, computed
    from the model inputs ``batches`` in inference mode (hard staircases before it)."""
    probe = tf.function(keras.Model(model.inputs, layer_tensor_in(model, layer)))
    reestimate_batch_norm(layer, (np.asarray(probe(batch, training=False)) for batch in batches))


def _calibrate_output_quantizer(layer, quantizer, variables, plans, sample):
    """Scales and thresholds of one activation quantizer from the activations it sees
    (``sample``: an :class:`ActivationSample` of its output batches)."""
    if not sample.all_finite():
        raise ValueError(
            f"Layer {layer.layer.name!r}: calibration produced NaN/Inf activations; "
            "check the calibration data and the model's weights.")
    if isinstance(quantizer, Int8OutputQuantizer):
        if type(layer.layer).__name__ in TIE_PRONE_OUTPUTS:
            # scaled pixels and products lie on a lattice: keep them off rounding ties
            extremes = np.asarray(tie_free_output_range(sample))
        else:
            extremes = np.array([sample.min(), sample.max()])
        quantizer.initialize_range(variables, extremes)
        return
    method = plans[layer.layer.name].output_thresholds
    alpha, beta = initial_scales(sample, quantizer.levels, method)
    # uniform thresholds do not read the sample: skip scaling (and copying) all of it
    scaled = None if method == "uniform" else beta * sample.concatenated()
    _assign(variables, alpha, beta, activation_thresholds(scaled, quantizer.levels, method))


def _output_quantized(quantizer, variables, raw):
    """What the wrapper returns in inference mode, from the outputs ``raw`` it gave with its
    output quantizer bypassed.

    tfmot's wrapper ends with ``quantizer(outputs, False, weights=variables)`` (its
    ``smart_cond`` on ``training=False``); applying that to the saved outputs gives the same
    tensors as calling the layer again, without running its convolution (and its weight
    quantizer) a second time on every calibration batch.
    """
    return [quantizer(out, False, weights=variables) for out in raw]


def calibrate_activation_quantizers(model, plans, batches, verbose=0):
    """Calibrate the model after its weights were quantized, layer by layer in order.

    Two kinds of targets, visited in topological order, each with everything before
    it already quantized (hard staircases):

    * every BatchNormalization after a quantized layer gets the moving mean and
      variance of its new inputs (:func:`reestimate_batch_norm`). Quantizing a kernel
      per tensor changes each output channel's scale; with the float model's
      statistics the inference-mode network (and every activation range measured
      through it) is off (hard accuracy right after initialisation with and without
      it: docs/quantize.md);
    * every activation quantizer gets its scales and thresholds from the activations
      it sees (see the module docstring).

    The model is walked once, node by node (:func:`tf_qnets.keras2.propagation.propagate`),
    on at most the batches whose activations fit :data:`CALIBRATION_MEMORY_BYTES`.
    """
    targets = []
    batch_norms = {id(layer) for layer in batch_norms_after_quantized_layers(model)}
    for layer in model.layers:
        quantizer = variables = None
        if isinstance(layer, QNetsWrapper):
            quantizers = tfmot.output_quantizers(layer)
            if quantizers and isinstance(quantizers[0], (QNetsQuantizer, Int8OutputQuantizer)):
                quantizer, variables = quantizers[0], tfmot.output_quantizer_variables(layer)
        if id(layer) in batch_norms or quantizer is not None:
            targets.append((layer, id(layer) in batch_norms, quantizer, variables))
    if not targets:
        return
    by_layer = {id(layer): (batch_norm, quantizer, variables)
                for layer, batch_norm, quantizer, variables in targets}
    batches = limit_calibration_batches(model, batches, verbose)
    for _, _, quantizer, _ in targets:
        if quantizer is not None:
            quantizer.bypass = True
    progress = keras.utils.Progbar(len(targets), unit_name="layer") if verbose else None
    visited = []

    def visit(layer, inputs, compute):
        target = by_layer.get(id(layer))
        if target is None:
            return compute()
        batch_norm, quantizer, variables = target
        if batch_norm:
            reestimate_batch_norm(layer, (np.asarray(batch) for batch in inputs))
        if quantizer is not None:
            # this quantizer (and every later one) is bypassed: it sees what it will quantize
            raw = compute()
            sample = ActivationSample(np.asarray(out) for out in raw)
            _calibrate_output_quantizer(layer, quantizer, variables, plans, sample)
            quantizer.bypass = False
            outputs = _output_quantized(quantizer, variables, raw)
        else:
            outputs = compute()
        visited.append(layer)
        if progress is not None:
            progress.update(len(visited))
        return outputs

    with contextlib.ExitStack() as stack:
        for layer in model.layers:
            if isinstance(layer, QNetsWrapper):
                # kernels and their quantizers are fixed during the walk: quantize each once
                for _, weight_quantizer, _ in tfmot.weight_quantizer_variables(layer):
                    if isinstance(weight_quantizer, QNetsQuantizer):
                        stack.enter_context(weight_quantizer.hard_outputs_cached())
        try:
            propagate(model, batches, visit)
        finally:
            for _, _, quantizer, _ in targets:
                if quantizer is not None:
                    quantizer.bypass = False


def limit_calibration_batches(model, batches, verbose=0):
    """The leading batches whose activations fit :data:`CALIBRATION_MEMORY_BYTES` during the
    layer-by-layer walk (:func:`tf_qnets.core.calibration.leading_batches`)."""
    return leading_batches(batches, live_bytes_per_sample(model), CALIBRATION_MEMORY_BYTES,
                           verbose)

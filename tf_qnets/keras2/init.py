"""Data-driven initialisation of the quantizers from a pretrained float model (method.md Sec. 3).

For a tensor ``x`` with levels ``Y`` (``p = max |y|``, ``q = max |x|``)::

    beta  = (5/4 * p) / q          # the largest level maps to 0.8 * max|x|
    alpha = 1 / beta

Thresholds ``b_i`` in the beta-scaled domain:

* binary weights {-1, +1}: ``b = 0``; ternary {-1, 0, 1}: ``b = (-0.05, +0.05)`` (the
  paper, ``"kmeans"``) or, by default (``"auto"``), ``b = -/+ 0.7 mean |beta w|`` (TWN's
  dead zone: with 0.05 almost no weight is 0 and the set starts nearly binary);
* other sets, ``"kmeans"``: 1-D k-means of ``beta * x`` into ``n + 1`` clusters, sorted
  centres ``c``, ``b_i = (c_i + c_{i+1}) / 2``; for weights the two thresholds around
  level 0 are then set to -0.05 and +0.05; 1-bit activations use ``b = 0.05``
  (the authors' release);
* ``"uniform"``: halfway between neighbouring levels, ``b_i = (y_{i-1} + y_i) / 2``;
  for uniform level sets the scale then minimises the quantization MSE on the tensor
  (:func:`mse_scales`) instead of the max rule, which at 2 bits would zero most values.

Weights are initialised from the kernel; activations from calibration data, layer
by layer in topological order, each with the quantizers before it already active
(hard staircase), as in the paper.
"""

import numpy as np

from tf_qnets.keras2 import tfmot
from tf_qnets.keras2.backend import keras, tf
from tf_qnets.tf.distribute import broadcast_from_first_replica
from tf_qnets.keras2.int8 import Int8OutputQuantizer, Int8WeightQuantizer, initialize_int8_weight_range
from tf_qnets.keras2.propagation import live_bytes_per_sample, propagate
from tf_qnets.keras2.quantizer import QNetsQuantizer
from tf_qnets.keras2.wrapper import QNetsWrapper

__all__ = [
    "kmeans_1d",
    "scales_for",
    "mse_scales",
    "weight_thresholds",
    "activation_thresholds",
    "initialize_weight_quantizers",
    "calibrate_activation_quantizers",
    "calibration_batches",
    "batch_norms_after_quantized_layers",
    "reestimate_batch_norm",
    "reestimate_batch_norm_in",
]

ZERO_BAND = 0.05
TERNARY_DEAD_ZONE = 0.7
MIN_GAP = 1e-3
MAX_KMEANS_SAMPLES = 200_000
CALIBRATION_MEMORY_BYTES = 2 * 2**30   # live activations kept by the layer-by-layer walk


def kmeans_1d(values, clusters, iterations=50, seed=0):
    """Lloyd's k-means on a 1-D sample; returns ``clusters`` sorted centres.

    Initialised at evenly spaced quantiles; an empty cluster keeps its centre.
    """
    data = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if data.size > MAX_KMEANS_SAMPLES:
        rng = np.random.default_rng(seed)
        data = np.sort(rng.choice(data, MAX_KMEANS_SAMPLES, replace=False))
    centres = np.quantile(data, (np.arange(clusters) + 0.5) / clusters)
    prefix = np.concatenate([[0.0], np.cumsum(data)])
    for _ in range(iterations):
        bounds = np.searchsorted(data, (centres[:-1] + centres[1:]) / 2.0)
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [data.size]])
        counts = ends - starts
        sums = prefix[ends] - prefix[starts]
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        updated = np.sort(updated)
        if np.allclose(updated, centres, rtol=0, atol=1e-9):
            centres = updated
            break
        centres = updated
    return centres


def _strictly_increasing(thresholds):
    out = np.asarray(thresholds, dtype=np.float64).copy()
    for i in range(1, out.size):
        out[i] = max(out[i], out[i - 1] + MIN_GAP)
    return out


def scales_for(levels, max_abs):
    """``(alpha, beta)`` with ``beta = 1.25 p / q``; ``q = 0`` (a dead tensor) counts as 1."""
    q = float(max_abs)
    if not np.isfinite(q) or q <= 0.0:
        q = 1.0
    beta = 1.25 * levels.max_abs / q
    return 1.0 / beta, beta


def mse_scales(values, levels, candidates=64, seed=0):
    """``(alpha, beta)`` of the uniform staircase that minimises ``E[(x - Q(x))^2]`` on a sample.

    ``Q(x) = s * y_j`` with ``j`` the number of midpoints ``(y_{i-1} + y_i) / 2`` below
    ``x / s``; the step ``s = alpha = 1 / beta`` is searched over
    ``s = r * max|x| / p`` for ``r`` in (0, 1.25]. Used for ``thresholds="uniform"``,
    where the paper's max-based scale would send most of a long-tailed tensor (ReLU
    outputs, weights) to the zero level at 2 bits.
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size > MAX_KMEANS_SAMPLES:
        data = np.random.default_rng(seed).choice(data, MAX_KMEANS_SAMPLES, replace=False)
    top = float(np.max(np.abs(data))) if data.size else 0.0
    if not np.isfinite(top) or top <= 0.0:
        return scales_for(levels, top)
    y = np.asarray(levels.levels, dtype=np.float64)
    midpoints = np.asarray(levels.uniform_thresholds(), dtype=np.float64)
    # Sorted data and prefix sums: each candidate's error from the bin edges alone,
    # sum_j sum_{x in bin j} (x - s y_j)^2 = S2 - 2 s y_j S1 + s^2 y_j^2 N per bin.
    data = np.sort(data)
    first = np.concatenate([[0.0], np.cumsum(data)])
    second = np.concatenate([[0.0], np.cumsum(data * data)])
    best_step, best_error = None, np.inf
    for ratio in np.linspace(1.25 / candidates, 1.25, candidates):
        step = ratio * top / levels.max_abs
        # bin j holds the x with midpoint_{j-1} < x / step <= midpoint_j
        edges = np.concatenate([[0], np.searchsorted(data, midpoints * step, side="right"),
                                [data.size]])
        count = np.diff(edges)
        total = first[edges[1:]] - first[edges[:-1]]
        squares = second[edges[1:]] - second[edges[:-1]]
        error = float(np.sum(squares - 2.0 * step * y * total + (step * y) ** 2 * count)) / data.size
        if error < best_error:
            best_step, best_error = step, error
    return best_step, 1.0 / best_step


def _kmeans_thresholds(scaled, levels):
    if np.unique(scaled).size < len(levels):
        return levels.uniform_thresholds()
    centres = kmeans_1d(scaled, len(levels))
    return (centres[:-1] + centres[1:]) / 2.0


def _paper_zero_band(thresholds, values):
    """Set the two thresholds around level 0 to -/+ ZERO_BAND, keeping the order."""
    zero = values.index(0)
    if zero > 0:
        thresholds[zero - 1] = -ZERO_BAND
    if zero < len(values) - 1:
        thresholds[zero] = ZERO_BAND
    # Keep the order if clustering put outer thresholds inside the zero band.
    thresholds[: max(zero - 1, 0)] = np.minimum(thresholds[: max(zero - 1, 0)], -ZERO_BAND - MIN_GAP)
    thresholds[zero + 1:] = np.maximum(thresholds[zero + 1:], ZERO_BAND + MIN_GAP)
    return thresholds


def ternary_dead_zone(scaled_kernel):
    """``Delta = 0.7 * mean |x|``: the ternary weights' dead zone (Li & Liu, TWN, 2016).

    Weights with ``|x| <= Delta`` become 0. For Gaussian weights this is close to the
    threshold that minimises ``E[(w - alpha * Q(w))^2]``; the paper's fixed ``0.05`` (in
    the beta domain, ``beta = 1.25 / max|w|``) zeroes only ``|w| < 0.04 max|w|``, so the
    ternary set starts almost binary.
    """
    mean_abs = float(np.mean(np.abs(scaled_kernel))) if np.size(scaled_kernel) else 0.0
    if not np.isfinite(mean_abs) or mean_abs <= 0.0:
        return ZERO_BAND
    return TERNARY_DEAD_ZONE * mean_abs


def weight_thresholds(scaled_kernel, levels, method="kmeans"):
    """Thresholds for a weight tensor already multiplied by beta (see module docstring).

    ``method``: ``"kmeans"`` (the paper's rule: k-means, the two thresholds around 0 at
    -/+ ZERO_BAND), ``"auto"`` (the same, except that a ternary set's dead zone comes from
    the data, :func:`ternary_dead_zone`) or ``"uniform"``.
    """
    if method not in ("kmeans", "auto", "uniform"):
        raise ValueError(f"method must be 'kmeans', 'auto' or 'uniform', got {method!r}.")
    values = tuple(levels.levels)
    if values == (-1, 1):
        return np.zeros(1)
    if method == "uniform":
        return levels.uniform_thresholds()
    if values == (-1, 0, 1):
        band = ZERO_BAND if method == "kmeans" else ternary_dead_zone(scaled_kernel)
        return np.array([-band, band])
    thresholds = _kmeans_thresholds(scaled_kernel, levels)
    if 0 in values:
        thresholds = _paper_zero_band(thresholds, values)
    return _strictly_increasing(thresholds)


def activation_thresholds(scaled_activations, levels, method="kmeans"):
    """Thresholds for an activation sample already multiplied by beta (see module docstring)."""
    if method == "uniform":
        return levels.uniform_thresholds()
    if tuple(levels.levels) == (0, 1):
        return np.array([ZERO_BAND])
    return _strictly_increasing(_kmeans_thresholds(scaled_activations, levels))


def _initial_scales(values, levels, method):
    """``(alpha, beta)`` for a tensor: the MSE scale for uniform thresholds on uniform
    levels (:func:`mse_scales`), else the paper's max rule (:func:`scales_for`)."""
    if method == "uniform" and levels.is_uniform:
        return mse_scales(values, levels)
    return scales_for(levels, np.max(np.abs(values)))


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
            alpha, beta = _initial_scales(kernel, quantizer.levels, method)
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
        if downstream and isinstance(layer, keras.layers.BatchNormalization):
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
    axis but the normalised ones.
    """
    count, total, squares, reduce = 0, 0.0, 0.0, None
    for batch in inputs:
        values = np.asarray(batch, dtype=np.float64)
        if reduce is None:
            axes = [a % values.ndim for a in np.atleast_1d(layer.axis)]
            reduce = tuple(i for i in range(values.ndim) if i not in axes)
        count += int(np.prod([values.shape[i] for i in reduce]))
        total = total + np.sum(values, axis=reduce)
        squares = squares + np.sum(np.square(values), axis=reduce)
    mean = total / count
    variance = np.maximum(squares / count - np.square(mean), 0.0)
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
    """Scales and thresholds of one activation quantizer from the activations it sees."""
    if not np.all(np.isfinite(sample)):
        raise ValueError(
            f"Layer {layer.layer.name!r}: calibration produced NaN/Inf activations; "
            "check the calibration data and the model's weights.")
    if isinstance(quantizer, Int8OutputQuantizer):
        quantizer.initialize_range(variables, sample)
        return
    method = plans[layer.layer.name].output_thresholds
    alpha, beta = _initial_scales(sample, quantizer.levels, method)
    _assign(variables, alpha, beta, activation_thresholds(beta * sample, quantizer.levels, method))


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
        if id(layer) in batch_norms:
            targets.append((layer, None, None))
            continue
        if not isinstance(layer, QNetsWrapper):
            continue
        quantizers = tfmot.output_quantizers(layer)
        if quantizers and isinstance(quantizers[0], (QNetsQuantizer, Int8OutputQuantizer)):
            targets.append((layer, quantizers[0], tfmot.output_quantizer_variables(layer)))
    if not targets:
        return
    by_layer = {id(layer): (quantizer, variables) for layer, quantizer, variables in targets}
    batches = limit_calibration_batches(model, batches, verbose)
    for _, quantizer, _ in targets:
        if quantizer is not None:
            quantizer.bypass = True
    progress = keras.utils.Progbar(len(targets), unit_name="layer") if verbose else None
    visited = []

    def visit(layer, inputs, compute):
        target = by_layer.get(id(layer))
        if target is None:
            return compute()
        quantizer, variables = target
        if quantizer is None:
            reestimate_batch_norm(layer, (np.asarray(batch) for batch in inputs))
        else:
            # this quantizer (and every later one) is bypassed: it sees what it will quantize
            sample = np.concatenate([np.asarray(out).ravel() for out in compute()])
            _calibrate_output_quantizer(layer, quantizer, variables, plans, sample)
            quantizer.bypass = False
        visited.append(layer)
        if progress is not None:
            progress.update(len(visited))
        return compute()

    try:
        propagate(model, batches, visit)
    finally:
        for _, quantizer, _ in targets:
            if quantizer is not None:
                quantizer.bypass = False


def limit_calibration_batches(model, batches, verbose=0):
    """The leading batches whose activations fit :data:`CALIBRATION_MEMORY_BYTES` during the
    layer-by-layer walk (at least one batch); large inputs (224x224 MobileNets) use fewer
    images than given, which the statistics of a few hundred images do not need."""
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

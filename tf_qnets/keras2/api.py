"""``quantize_model``: one call from a float Keras model to a trainable Quantization Network."""

import warnings

import numpy as np

from tf_qnets.keras2 import tfmot
from tf_qnets.keras2.backend import keras, require_keras2_model, tf
from tf_qnets.core.bias_lattice import snap_if_describable
from tf_qnets.core.batch_norm import check_batch_norm_mode, stale_statistics_message
from tf_qnets.core.normalization_lattice import statistics_in_variables
from tf_qnets.core.plan import split_activations, split_per_layer
from tf_qnets.core.separable import separable_per_layer, separable_splits
from tf_qnets.keras2.operator_layers import operator_layers, replace_operator_layers
from tf_qnets.keras2.describe_network import describe_network
from tf_qnets.keras2.batch_norm import freezable, frozen_copy
from tf_qnets.tf.distribute import broadcast_from_first_replica
from tf_qnets.keras2.input_quantizer import set_input_ranges
from tf_qnets.keras2.init import (
    batch_norms_after_quantized_layers,
    calibrate_activation_quantizers,
    calibration_batches,
    initialize_weight_quantizers,
)
from tf_qnets.keras2.quantizer import QNetsQuantizer
from tf_qnets.keras2.scheme import QNetsScheme, layer_infos, plan_quantization
from tf_qnets.keras2.scope import quantize_scope
from tf_qnets.keras2.split_activation import split_kernel_activations
from tf_qnets.keras2.split_separable import split_separable_convolutions
from tf_qnets.tf.staircase import DEFAULT_ACTIVATION_GRADIENT
from tf_qnets.keras2.wrapper import QNetsWrapper

__all__ = ["quantize_model"]


def _check_model_structure(model):
    require_keras2_model(model)
    if not isinstance(model, keras.Sequential) and not getattr(model, "_is_graph_network", False):
        raise TypeError(
            f"`model` is a subclassed model ({type(model).__name__}); tf_qnets needs a Sequential "
            "or Functional model whose layers it can see. Rewrite `call` as a Functional model: "
            "`inputs = keras.Input(shape); outputs = ...layers...; keras.Model(inputs, outputs)`.")
    if not model.built:
        raise ValueError(
            "`model` is not built; give the first layer an `input_shape` or call "
            "`model.build(input_shape)` first.")
    for layer in model.layers:
        if isinstance(layer, (tfmot.QuantizeWrapper, tfmot.QuantizeAnnotate)):
            raise ValueError(
                f"`model` is already quantized or annotated (layer {layer.name!r} is a "
                f"{type(layer).__name__}); pass the original float model.")


def _check_finite_weights(model, plans):
    """NaN/Inf in a layer to quantize would silently give NaN scales; refuse it up front."""
    for name in plans:
        for weight in model.get_layer(name).weights:
            if not np.all(np.isfinite(weight.numpy())):
                short = weight.name.split("/")[-1].split(":")[0]
                raise ValueError(
                    f"Layer {name!r}: its {short} contains NaN or Inf values; `model` must have "
                    "finite weights (fix or retrain it, or keep the layer float with "
                    f"`exclude=[{name!r}]`).")


def _warn_stale_batch_norm(qat, batch_norm):
    stale = [layer.name for layer in batch_norms_after_quantized_layers(qat)]
    if stale:
        warnings.warn(stale_statistics_message(stale, batch_norm), UserWarning, stacklevel=3)


def _annotate(model, plans, batch_norm="frozen"):
    # a quantized Normalization with constant statistics keeps them in variables instead, so
    # that snap_biases can move its mean onto the file's lattice (core.normalization_lattice)
    in_variables = {}

    def annotate(layer):
        config = layer.get_config()
        if type(layer).__name__ == "Normalization" and layer.name in plans:
            found = statistics_in_variables(config, layer.input_shape)
            if found is not None:
                config, in_variables[layer.name] = found
        if batch_norm == "frozen" and freezable(layer):
            fresh = frozen_copy(layer)
        else:
            fresh = layer.__class__.from_config(config)
        if layer.name in plans:
            return tfmot.QuantizeAnnotate(fresh, quantize_config=plans[layer.name].config)
        return fresh

    annotated = keras.models.clone_model(model, clone_function=annotate)
    for source, target in zip(model.layers, annotated.layers):
        values = in_variables.get(source.name)
        if values is not None:
            rest = [np.zeros_like(value) for value in target.get_weights()[len(values):]]
            target.set_weights(values + rest)
        elif source.weights:
            target.set_weights(source.get_weights())
    return annotated


def finalize_layer_states(model):
    """Let every layer of ``model`` (inside the wrappers too) recompute the state it derives from
    its weights, as ``Layer.set_weights`` does: tfmot copies the weights into the quantized
    model by assigning the variables, after which a ``Normalization`` would keep the mean 0 and
    variance 1 it was built with and ignore the statistics it holds (the ImageNet mean and
    variance of a ``keras.applications.EfficientNet*`` built with ``weights="imagenet"``)."""
    for layer in model.submodules:
        if isinstance(layer, keras.layers.Layer):
            layer.finalize_state()


def quantize_model(model, w_bits=3, a_bits=None, *, calibration_data=None,
                   weight_scheme="pow2", thresholds="auto", first_last="float",
                   per_layer=None, exclude=(), gradient=None,
                   activation_gradient=DEFAULT_ACTIVATION_GRADIENT,
                   train_thresholds=False, batch_norm="frozen", verbose=1):
    """Turn a float Keras model into a Quantization Network ready for fine-tuning.

    Each quantized tensor ``x`` (a kernel, or an activation after a ReLU-like layer)
    is replaced by a staircase with integer levels ``y_0 < ... < y_n``::

        training:  alpha * (sum_i s_i * sigmoid(clip(T (beta x - b_i), -10, 10)) - o)
        inference: alpha * (sum_i s_i * [beta x > b_i] - o)

    with ``s_i = y_i - y_{i-1}``, ``o = -y_0``; alpha, beta are learned, the thresholds
    ``b_i`` come from the float model (k-means) and T rises during training
    (:class:`tf_qnets.TemperatureScheduler`). ``model.evaluate`` and ``predict`` use the
    hard staircase: what the device computes.

    Args:
      model: a built tf_keras Sequential or Functional model (not modified).
      w_bits: weight bit width 1..8 (1: {-1,1}, 2: {-1,0,1}, 3: {-4,-2,-1,0,1,2,4},
        4..8: symmetric uniform), a sorted sequence of integer levels, or None
        (float weights).
      a_bits: activation bit width 1..8 ({0..2^k-1} after non-negative activations, a
        symmetric signed set otherwise), a sequence of levels, or None (float activations).
      calibration_data: a tf.data.Dataset of input batches (or (x, y) batches), or an
        array of inputs; required when activations are quantized (~1000 samples).
      weight_scheme: ``"pow2"`` (paper) or ``"uniform"`` ({-3..3}) for 3-bit weights.
      thresholds: how thresholds are initialised. ``"auto"`` (default): k-means for
        weights (the paper), except that 2-bit (ternary) weights get the dead zone
        ``|w| <= 0.7 mean|w|`` (TWN) instead of the paper's ``|beta w| <= 0.05``, which zeroes
        almost nothing; for activations, halfway between levels with the scale
        that minimises the quantization error on the calibration data; ``"kmeans"``
        (the paper's rule everywhere) or ``"uniform"`` (halfway between levels, MSE
        scale, everywhere). Why "auto": right after initialisation the hard model is
        far more accurate with uniform activation thresholds than with k-means ones
        (measured in docs/quantize.md); uniform activation thresholds also lower to
        exact int8 requantization and keep training cost flat at 8 bits.
      first_last: ``"float"`` (paper: first and last kernel layers stay float),
        ``"int8"`` (simulate them as an int8 device computes them) or ``"low_bit"``.
      per_layer: ``{layer_name: {setting: value}}`` overriding ``w_bits``, ``a_bits``,
        ``weight_scheme``, ``thresholds``, ``gradient``, ``activation_gradient``,
        ``train_thresholds`` for one layer, or ``{layer_name: None}`` to keep it float.
      exclude: names of layers to keep float.
      gradient: the weight quantizers' backward: ``"exact"``, ``"wide"`` or ``"smooth"``;
        default ``None`` means ``"wide"`` for binary weights (the authors' release),
        ``"exact"`` for ternary ones and ``"smooth"`` from 3 bits on (docs/train.md, "The
        weights' backward", compares them).
      activation_gradient: the activation quantizers' backward: ``"smooth"`` (default: the
        soft staircase's derivative at temperature ``min(T, 2)``, times that temperature,
        so every activation inside the staircase's range gets a gradient, not only those
        at a threshold), ``"exact"`` (the derivative at T itself) or ``"wide"``. It trains
        low-bit activations to higher accuracy (docs/train.md) and costs about the same
        step time as ``"exact"`` at every bit width (docs/benchmarks.md): its backward
        evaluates up to 11 thresholds per element from one exponential. The forward pass,
        evaluation and export do not depend on it. See :mod:`tf_qnets.tf.staircase`.
      train_thresholds: also learn the thresholds (the paper freezes them).
      batch_norm: ``"frozen"`` (default): every BatchNormalization normalises with its
        moving statistics during ``fit`` too and does not update them
        (:class:`tf_qnets.FrozenStatisticsBatchNormalization`; gamma and beta still
        train). The statistics are those of the quantized network, measured on
        ``calibration_data``, so ``fit`` trains exactly the network that ``evaluate``
        and :func:`tf_qnets.export_tflite` compute, with no step in between.
        ``"batch"``: Keras's usual behaviour (batch statistics in training, moving
        averages for inference); the averages then trail the trained network and
        :func:`tf_qnets.recalibrate_batch_norm` is needed after ``fit``. Measurements
        of both: docs/train.md.
      verbose: 0 silent, 1 progress bar while calibrating.

    Returns:
      A new, uncompiled tf_keras model whose quantized layers are
      :class:`tf_qnets.QNetsWrapper` s. The folded biases that the integer file rounds
      are on its int32 lattice (:func:`tf_qnets.snap_biases`), so the model exported as it
      is computes what the file computes.

    Example::

        qat = tf_qnets.quantize_model(model, w_bits=3, a_bits=3, calibration_data=ds.take(8))
        qat.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"], jit_compile=True)
        qat.fit(ds, epochs=10, callbacks=[tf_qnets.TemperatureScheduler()])   # T = 10, 20, ..., 100
    """
    _check_model_structure(model)
    check_batch_norm_mode(batch_norm)
    # TFOpLambda arithmetic (``x + y``, ``x * y``, EfficientNet's per-channel ImageNet input
    # scaling) becomes the Add / Multiply / Rescaling layer that the model can round to int8
    # as the file does.
    model = replace_operator_layers(model, operator_layers(model))
    # A SeparableConv2D becomes the DepthwiseConv2D and 1x1 Conv2D it computes, both quantized.
    separable = separable_splits(layer_infos(model), per_layer, exclude)
    model = split_separable_convolutions(model, separable)
    per_layer = separable_per_layer(per_layer, separable)
    # A kernel layer's swish/sigmoid/... activation with a staircase goes onto a layer of its
    # own, so that the int8 rounding of its input is in the model as in the file.
    splits = split_activations(layer_infos(model), a_bits, per_layer, exclude)
    model = split_kernel_activations(model, splits)
    per_layer = split_per_layer(per_layer, splits)
    plans = plan_quantization(
        model, w_bits, a_bits, weight_scheme=weight_scheme, thresholds=thresholds,
        first_last=first_last, per_layer=per_layer, exclude=exclude, gradient=gradient,
        activation_gradient=activation_gradient,
        train_thresholds=train_thresholds)
    _check_finite_weights(model, plans)
    needs_calibration = any(
        plan.config.output_quantizer is not None for plan in plans.values())
    batches = None
    if needs_calibration:
        if calibration_data is None:
            raise ValueError(
                "`calibration_data` is required when activations are quantized (a_bits is set or "
                "first_last='int8'): pass a few batches of typical inputs, e.g. "
                "`calibration_data=train_ds.take(8)`.")
    if calibration_data is not None:
        batches = calibration_batches(calibration_data, model)

    annotated = _annotate(model, plans, batch_norm)   # fresh layers: the user's stay untouched
    with quantize_scope():
        # QNetsWrapper (not tfmot's wrapper) from the start: see tfmot.quantize_apply.
        qat = tfmot.quantize_apply(annotated, QNetsScheme(quantize_inputs=needs_calibration),
                                   wrapper_class=QNetsWrapper)
    finalize_layer_states(qat)

    initialize_weight_quantizers(qat, plans)
    if needs_calibration:
        set_input_ranges(qat, batches)
    if batches is not None:
        calibrate_activation_quantizers(qat, plans, batches, verbose=verbose)
    else:
        _warn_stale_batch_norm(qat, batch_norm)
    # The folded biases the integer file rounds, onto its lattice: exported as it is, the
    # model is exact too (at most half a bias unit each; tf_qnets.core.bias_lattice).
    snap_if_describable(qat, describe_network,
                        (lambda line: print(f"[tf_qnets] {line}")) if verbose else None)
    if tf.distribute.has_strategy():
        # Under a strategy, every replica (on every worker) starts from replica 0's values.
        broadcast_from_first_replica(qat)
    return qat


def is_quantized_model(model):
    """True when ``model`` contains tf_qnets quantizers."""
    return any(
        isinstance(layer, QNetsWrapper) for layer in getattr(model, "layers", []))


def count_quantizers(model, role=None):
    """Number of low-bit (sum-of-sigmoids) quantizers in ``model`` (of one ``role``,
    ``"weights"`` or ``"activations"``, when given)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, QNetsWrapper):
            for _, _, quantizer, _ in layer.quantizer_states():
                total += (isinstance(quantizer, QNetsQuantizer)
                          and (role is None or quantizer.role == role))
    return total

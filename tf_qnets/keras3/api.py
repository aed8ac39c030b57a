"""``quantize_model`` for Keras 3: one call from a float model to a trainable Quantization Network.

Works with every Keras 3 backend that ``keras.ops`` covers; tested on TensorFlow and JAX
(under JAX without TensorFlow installed).
"""

import warnings

import keras
import numpy as np
from keras import ops

from tf_qnets.core.bias_lattice import snap_if_describable
from tf_qnets.core.batch_norm import check_batch_norm_mode, stale_statistics_message
from tf_qnets.core.plan import plan_layers, split_activations, split_per_layer
from tf_qnets.core.separable import separable_per_layer, separable_splits
from tf_qnets.core.staircase import DEFAULT_ACTIVATION_GRADIENT
from tf_qnets.keras3.calibration import calibration_batches
from tf_qnets.keras3.describe_network import describe_network
from tf_qnets.keras3.describe import check_model, layer_infos, layer_readers
from tf_qnets.keras3.input_quantizer import set_input_ranges
from tf_qnets.keras3.int8 import is_int8_quantizer
from tf_qnets.keras3.init import (
    batch_norms_after_quantized_layers,
    calibrate,
    initialize_weight_quantizers,
)
from tf_qnets.keras3.operator_layers import operator_layers, replace_operator_layers
from tf_qnets.keras3.quantizer import QNetsQuantizer
from tf_qnets.keras3.rewrite import wrap_layers
from tf_qnets.keras3.split_separable import split_separable_convolutions
from tf_qnets.keras3.split_activation import split_kernel_activations
from tf_qnets.keras3.wrapper import QNetsWrapper

__all__ = ["count_quantizers", "is_quantized_model", "quantize_model", "quantizers"]


# The backends the Keras 3 path is tested on (tests/test_keras3_backends.py).
SUPPORTED_BACKENDS = ("tensorflow", "jax")


def _check_backend():
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(
            f"tf_qnets' Keras 3 path supports the {' and '.join(SUPPORTED_BACKENDS)} backends; "
            f"this process runs Keras on {backend!r}. Set KERAS_BACKEND=jax (or tensorflow) "
            "before keras is imported.")


def _check_finite_weights(model, specs):
    """NaN/Inf in a layer to quantize would silently give NaN scales; refuse it up front."""
    for name in specs:
        for weight in model.get_layer(name).weights:
            if not np.all(np.isfinite(ops.convert_to_numpy(weight))):
                raise ValueError(
                    f"Layer {name!r}: its {weight.name} contains NaN or Inf values; `model` must "
                    "have finite weights (fix or retrain it, or keep the layer float with "
                    f"`exclude=[{name!r}]`).")


def _warn_stale_batch_norm(qat, batch_norm):
    stale = [layer.name for layer in batch_norms_after_quantized_layers(qat)]
    if stale:
        warnings.warn(stale_statistics_message(stale, batch_norm), UserWarning, stacklevel=3)


def quantize_model(model, w_bits=3, a_bits=None, *, calibration_data=None, weight_scheme="pow2",
                   thresholds="auto", first_last="float", per_layer=None, exclude=(),
                   gradient=None, activation_gradient=DEFAULT_ACTIVATION_GRADIENT,
                   train_thresholds=False, batch_norm="frozen", verbose=1):
    """Turn a float Keras 3 model into a Quantization Network ready for fine-tuning.

    Each quantized tensor ``x`` (a kernel, or an activation after a ReLU-like layer) is
    replaced by a staircase with integer levels ``y_0 < ... < y_n``::

        training:  alpha * (sum_i s_i * sigmoid(clip(T (beta x - b_i), -10, 10)) - o)
        inference: alpha * (sum_i s_i * [beta x > b_i] - o)

    with ``s_i = y_i - y_{i-1}``, ``o = -y_0``; ``alpha`` and ``beta`` are learned, the
    thresholds ``b_i`` come from the float model (k-means on kernels, calibration data for
    activations) and ``T`` rises during training
    (:class:`tf_qnets.keras3.schedule.TemperatureScheduler`). ``evaluate`` and ``predict``
    use the hard staircase: what the device computes.

    Args:
      model: a built Keras 3 Sequential or Functional model (not modified).
      w_bits: weight bit width 1..8 (1: {-1,1}, 2: {-1,0,1}, 3: {-4,-2,-1,0,1,2,4},
        4..8: symmetric uniform), a sorted sequence of integer levels, or None (float weights).
      a_bits: activation bit width 1..8 ({0..2^k-1} after non-negative activations, a
        symmetric signed set otherwise), a sequence of levels, or None (float activations).
      calibration_data: input batches (a NumPy array, an ``(x, y)`` tuple, or an iterable of
        batches); required when activations are quantized. Also re-estimates the
        BatchNormalization statistics after quantized layers.
      weight_scheme: ``"pow2"`` (paper) or ``"uniform"`` for 3-bit weights.
      thresholds: ``"auto"`` (k-means for weights with a data-driven ternary dead zone;
        uniform thresholds with the MSE scale for activations), ``"kmeans"`` or ``"uniform"``.
      first_last: the first and last kernel layers: ``"float"`` (paper: they stay float),
        ``"int8"`` (simulate them as an int8 device computes them: symmetric per-channel
        8-bit kernels, :class:`tf_qnets.keras3.int8.Int8WeightQuantizer`, and an 8-bit
        output of the last one with a moving-average range calibrated on
        ``calibration_data``, :class:`tf_qnets.keras3.int8.Int8OutputQuantizer`; needs
        ``calibration_data``) or ``"low_bit"`` (quantized like the others).
      per_layer: ``{layer_name: {setting: value}}`` overriding ``w_bits``, ``a_bits``,
        ``weight_scheme``, ``thresholds``, ``gradient``, ``activation_gradient`` or
        ``train_thresholds`` for one layer, or ``{layer_name: None}`` to keep it float.
      exclude: names of layers to keep float.
      gradient: the weight quantizers' backward, ``"exact"``, ``"wide"`` or ``"smooth"``;
        None: ``"wide"`` for binary weights (the authors' release), ``"exact"`` for
        ternary ones, ``"smooth"`` from 3 bits on (docs/train.md, "The weights' backward",
        compares them).
      activation_gradient: the activation quantizers' backward (default ``"smooth"``).
      train_thresholds: learn the thresholds too (the paper freezes them).
      batch_norm: ``"frozen"`` (default): every plain trainable BatchNormalization becomes a
        :class:`tf_qnets.keras3.batch_norm.FrozenStatisticsBatchNormalization`, which
        normalises with its moving statistics during ``fit`` too and never updates them
        (gamma and beta still train)::

            y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta

        The statistics are those of the quantized network, measured on
        ``calibration_data`` (without it they stay the float model's, with a warning), so
        ``fit`` trains exactly the network that ``evaluate`` computes. ``"batch"``: Keras's
        usual behaviour (batch statistics in training, moving averages for inference); the
        averages then trail the trained hard network, and
        :func:`tf_qnets.keras3.recalibrate_batch_norm` re-measures them after ``fit``.
      verbose: 0 silent, 1 prints what is being calibrated.

    Returns:
      A new, uncompiled Keras 3 model whose quantized layers are
      :class:`tf_qnets.keras3.wrapper.QNetsWrapper` s. It trains with a plain
      ``compile(..., jit_compile=True)`` and ``fit``, and saves to / loads from ``.keras``.
      The folded biases that the integer file rounds are on its int32 lattice
      (:func:`tf_qnets.snap_biases`), so the model exported as it is computes what the
      file computes.

    Example::

        from tf_qnets.keras3 import TemperatureScheduler, quantize_model

        qat = quantize_model(model, w_bits=3, a_bits=3, calibration_data=x_train[:512])
        qat.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=True)
        qat.fit(x_train, y_train, epochs=10, callbacks=[TemperatureScheduler()])
        qat.evaluate(x_test, y_test)           # hard staircases
    """
    _check_backend()
    check_model(model)
    check_batch_norm_mode(batch_norm)
    # ``x + y`` / ``x * y`` nodes become the Add / Multiply layers that compute them.
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
    specs = plan_layers(
        layer_infos(model), w_bits, a_bits, weight_scheme=weight_scheme, thresholds=thresholds,
        first_last=first_last, per_layer=per_layer, exclude=exclude, gradient=gradient,
        activation_gradient=activation_gradient, train_thresholds=train_thresholds,
        readers=layer_readers(model))
    _check_finite_weights(model, specs)
    needs_calibration = any(spec.output is not None for spec in specs.values())
    if needs_calibration and calibration_data is None:
        raise ValueError(
            "`calibration_data` is required when activations are quantized (a_bits is set, or "
            "first_last='int8'): pass a few batches of typical inputs, e.g. `calibration_data=x_train[:512]`.")
    batches = None if calibration_data is None else calibration_batches(calibration_data, model)

    qat = wrap_layers(model, specs, batch_norm, quantize_inputs=needs_calibration)
    initialize_weight_quantizers(qat, specs)
    if needs_calibration:
        set_input_ranges(qat, batches)
    if batches is not None:
        if verbose:
            count = sum(len(batch) for batch in batches)
            outputs = sum(1 for q in quantizers(qat) if q.role == "activations")
            print(f"[tf_qnets] calibrating {outputs} activation "
                  f"quantizers on {count} samples")
        calibrate(qat, specs, batches, verbose)
    else:
        _warn_stale_batch_norm(qat, batch_norm)
    # The folded biases the integer file rounds, onto its lattice: exported as it is, the
    # model is exact too (at most half a bias unit each; tf_qnets.core.bias_lattice).
    snap_if_describable(qat, describe_network,
                        (lambda line: print(f"[tf_qnets] {line}")) if verbose else None)
    return qat


def quantizers(model):
    """Every quantizer of ``model`` (weights and outputs), in layer order: the
    :class:`QNetsQuantizer` s and, with ``first_last="int8"``, the 8-bit
    :mod:`tf_qnets.keras3.int8` ones (no temperature; ``role`` as the others)."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, QNetsWrapper):
            found.extend(quantizer for _, quantizer in layer.quantizers())
        elif isinstance(layer, QNetsQuantizer):
            found.append(layer)
    return found


def is_quantized_model(model):
    """True when ``model`` contains tf_qnets Keras 3 quantizers."""
    return bool(quantizers(model))


def count_quantizers(model, role=None):
    """Number of low-bit (sum-of-sigmoids) quantizers in ``model`` (of one ``role``,
    ``"weights"`` or ``"activations"``, when given); 8-bit ones are not counted."""
    return sum(1 for q in quantizers(model)
               if not is_int8_quantizer(q) and (role is None or q.role == role))

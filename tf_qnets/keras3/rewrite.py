"""Build the quantized copy of a Keras 3 model: every planned layer inside a ``QNetsWrapper``.

``wrap_layers(model, specs)`` clones ``model`` (``keras.models.clone_model``: the same graph,
Sequential or Functional, residual ``Add``/``Concatenate`` included) with each layer rebuilt
from its config, wraps the layers named in ``specs`` (:func:`tf_qnets.core.plan.plan_layers`)
with their quantizers, and copies every float weight over. With ``batch_norm="frozen"``
(``quantize_model``'s default) every plain trainable BatchNormalization becomes a
:class:`tf_qnets.keras3.batch_norm.FrozenStatisticsBatchNormalization` with the same
config and weights. The user's model and its layers are never modified or reused.

Example::

    qat = wrap_layers(model, plan_layers(layer_infos(model), w_bits=3))
"""

import keras
import numpy as np

from tf_qnets.core.batch_norm import check_batch_norm_mode
from tf_qnets.core.normalization_lattice import statistics_in_variables
from tf_qnets.core.plan import Int8Spec, QuantizerSpec
from tf_qnets.keras3.batch_norm import freezable, frozen_copy
from tf_qnets.keras3.input_quantizer import (
    clone_sequential_with_input_quantizer,
    input_call_function,
)
from tf_qnets.keras3.int8 import Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.keras3.quantizer import QNetsQuantizer
from tf_qnets.keras3.wrapper import QNetsWrapper

__all__ = ["quantizer_for", "wrap_layers"]


def quantizer_for(spec, name, output=False):
    """The quantizer of one spec: a :class:`QNetsQuantizer` for a
    :class:`tf_qnets.core.plan.QuantizerSpec`, an :class:`Int8WeightQuantizer` /
    :class:`Int8OutputQuantizer` (``output=True``) for an ``Int8Spec``, None for None."""
    if spec is None:
        return None
    if isinstance(spec, Int8Spec):
        if output:
            return Int8OutputQuantizer(name=name)
        return Int8WeightQuantizer(per_axis=spec.per_axis, name=name)
    if not isinstance(spec, QuantizerSpec):
        raise TypeError(f"{name}: unknown quantizer spec {type(spec).__name__}.")
    return QNetsQuantizer(spec.levels, role=spec.role, gradient=spec.gradient,
                          train_thresholds=spec.train_thresholds, name=name)


def wrap_layers(model, specs, batch_norm="frozen", quantize_inputs=False):
    """A new model with the layers in ``specs`` wrapped (and, for ``batch_norm="frozen"``,
    its BatchNormalization layers frozen), and ``model``'s float weights; with
    ``quantize_inputs``, an :class:`~tf_qnets.keras3.input_quantizer.InputQuantizer` after
    each float input (the file's int8 input rounding)."""
    check_batch_norm_mode(batch_norm)

    # a quantized Normalization with constant statistics keeps them in variables instead, so
    # that snap_biases can move its mean onto the file's lattice (core.normalization_lattice)
    in_variables = {}

    def clone(layer):
        spec = specs.get(layer.name)
        config = layer.get_config()
        if type(layer).__name__ == "Normalization" and spec is not None:
            found = statistics_in_variables(config, tuple(layer.input.shape))
            if found is not None:
                config, in_variables[layer.name] = found
        if batch_norm == "frozen" and freezable(layer):
            fresh = frozen_copy(layer)
        else:
            fresh = layer.__class__.from_config(config)
        if spec is None:
            return fresh
        return QNetsWrapper(
            fresh,
            weight_quantizer=quantizer_for(spec.weight, f"{layer.name}_kernel_quantizer"),
            output_quantizer=quantizer_for(spec.output, f"{layer.name}_output_quantizer",
                                           output=True),
            name=layer.name)

    if not quantize_inputs:
        quantized = keras.models.clone_model(model, clone_function=clone)
    elif isinstance(model, keras.Sequential):
        quantized = clone_sequential_with_input_quantizer(model, clone)
    else:
        quantized = keras.models.clone_model(model, clone_function=clone,
                                             call_function=input_call_function())
    for layer in model.layers:
        values = in_variables.get(layer.name)
        if not layer.weights and values is None:
            continue
        target = quantized.get_layer(layer.name)
        if isinstance(target, QNetsWrapper):
            target = target.layer
        if values is not None:
            rest = [np.zeros_like(value) for value in target.get_weights()[len(values):]]
            target.set_weights(values + rest)
        else:
            target.set_weights(layer.get_weights())
        # state derived from the weights (a Normalization's mean and variance tensors), as
        # Keras recomputes it when it loads weights
        finalize = getattr(target, "finalize_state", None)
        if finalize is not None:
            finalize()
    return quantized

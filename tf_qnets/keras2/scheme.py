"""Which layer gets which quantizer, on Keras 2: the plan's quantizers and tfmot's ``QuantizeScheme``.

The policy (which layers get weight and activation quantizers, first/last layers, the
options) is ``tf_qnets.core.plan``; this module describes a tf_keras model's layers to it
and turns each :class:`~tf_qnets.core.plan.LayerSpec` into a :class:`QNetsQuantizeConfig`
with :class:`QNetsQuantizer` (sigmoid-sum) or tfmot-style int8 quantizers.
``BatchNormalization`` and weightless layers (pooling, Add, Concatenate, Flatten, ...) stay
float (BN is folded into the kernel scales at export).

:class:`QNetsScheme` hands tfmot a layout transform that adds only the model inputs' int8
rounding (when activations are quantized) and a registry that supports nothing on its own,
so ``quantize_apply`` adds nothing else we did not annotate.
"""

import dataclasses

from tf_qnets.core.layer_kinds import is_identity_of, pads_border_of
from tf_qnets.core.plan import FIRST_LAST, THRESHOLD_INITS, Int8Spec, LayerInfo, plan_layers
from tf_qnets.core.staircase import DEFAULT_ACTIVATION_GRADIENT
from tf_qnets.keras2 import tfmot
from tf_qnets.keras2.backend import keras
from tf_qnets.keras2.configs import QNetsQuantizeConfig
from tf_qnets.keras2.input_quantizer import add_input_quantizers
from tf_qnets.keras2.int8 import Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.keras2.quantizer import QNetsQuantizer

__all__ = ["QNetsScheme", "LayerPlan", "plan_quantization", "THRESHOLD_INITS", "FIRST_LAST",
           "layer_infos"]


@dataclasses.dataclass
class LayerPlan:
    """The quantize config of one layer and how to initialise its thresholds."""

    config: QNetsQuantizeConfig
    weight_thresholds: str = "kmeans"
    output_thresholds: str = "kmeans"


class _Layout(tfmot.QuantizeLayoutTransform):
    def __init__(self, quantize_inputs):
        self.quantize_inputs = quantize_inputs

    def apply(self, model, layer_quantize_map):
        if not self.quantize_inputs:
            return model, layer_quantize_map
        return add_input_quantizers(model, layer_quantize_map)


class _NothingRegistry(tfmot.QuantizeRegistry):
    def supports(self, layer):
        return False

    def get_quantize_config(self, layer):
        raise ValueError(
            f"Layer {layer.name!r} was not annotated by tf_qnets; it cannot be quantized implicitly.")


class QNetsScheme(tfmot.QuantizeScheme):
    """The tfmot scheme of tf_qnets: every quantized layer is annotated explicitly; with
    ``quantize_inputs`` each float model input gets the file's int8 rounding
    (:mod:`tf_qnets.keras2.input_quantizer`)."""

    def __init__(self, quantize_inputs=False):
        self.quantize_inputs = quantize_inputs

    def get_layout_transformer(self):
        return _Layout(self.quantize_inputs)

    def get_quantize_registry(self):
        return _NothingRegistry()


def _activation_name(activation):
    if activation is None:
        return None
    name = keras.activations.serialize(activation)
    if isinstance(name, dict):
        name = name.get("config", {}).get("name", name.get("class_name"))
    return name


def _layer_outputs(layer):
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return []
    return output if isinstance(output, (list, tuple)) else [output]


def layer_infos(model):
    """The :class:`~tf_qnets.core.plan.LayerInfo` of every layer of a tf_keras model."""
    output_names = {tensor.name for tensor in model.outputs}
    return [
        LayerInfo(
            name=layer.name,
            kind=type(layer).__name__,
            activation=_activation_name(getattr(layer, "activation", None)),
            negative_slope=float(getattr(layer, "negative_slope", 0.0) or 0.0),
            has_weights=bool(layer.weights),
            is_model=isinstance(layer, keras.Model),
            pads_border=pads_border_of(layer),
            is_identity=is_identity_of(layer),
            is_model_output=any(tensor.name in output_names for tensor in _layer_outputs(layer)),
        )
        for layer in model.layers
    ]


def layer_readers(model):
    """Layer name -> names of the layers that read its output in ``model``."""
    inside = {id(layer) for layer in model.layers}
    found = {}
    for layer in model.layers:
        names = []
        for node in layer._outbound_nodes:
            reader = node.outbound_layer
            if id(reader) in inside and reader.name not in names:
                names.append(reader.name)
        found[layer.name] = names
    return found


def _quantizer(spec, output):
    if spec is None:
        return None
    if isinstance(spec, Int8Spec):
        return Int8OutputQuantizer() if output else Int8WeightQuantizer(per_axis=spec.per_axis)
    return QNetsQuantizer(spec.levels, role=spec.role, gradient=spec.gradient,
                          train_thresholds=spec.train_thresholds)


def plan_quantization(model, w_bits=3, a_bits=None, *, weight_scheme="pow2",
                      thresholds="auto", first_last="float", per_layer=None, exclude=(),
                      gradient=None, activation_gradient=DEFAULT_ACTIVATION_GRADIENT,
                      train_thresholds=False):
    """Decide the quantize config of every layer; returns ``{layer_name: LayerPlan}``.

    See :func:`tf_qnets.quantize_model` for the arguments and ``tf_qnets.core.plan`` for
    the policy.
    """
    specs = plan_layers(
        layer_infos(model), w_bits, a_bits, weight_scheme=weight_scheme, thresholds=thresholds,
        first_last=first_last, per_layer=per_layer, exclude=exclude, gradient=gradient,
        activation_gradient=activation_gradient, train_thresholds=train_thresholds,
        readers=layer_readers(model))
    return {
        name: LayerPlan(
            config=QNetsQuantizeConfig(spec.weight_attr, _quantizer(spec.weight, False),
                                       _quantizer(spec.output, True)),
            weight_thresholds=spec.weight_thresholds,
            output_thresholds=spec.output_thresholds)
        for name, spec in specs.items()
    }

"""Which layer gets which quantizer: the tf_qnets policy and its tfmot ``QuantizeScheme``.

Policy (Yang et al. 2019, Sec. 4 and the authors' release):

* kernels of ``Conv1D``, ``Conv2D``, ``DepthwiseConv2D`` and ``Dense`` get a weight quantizer;
* the first and last of those layers stay float (``first_last="float"``, the paper),
  are simulated at int8 as an int8 device computes them (``"int8"``: tfmot's 8-bit
  per-channel weight and moving-average output quantizers), or are quantized like
  the others (``"low_bit"``);
* activations are quantized after ReLU-like layers (``ReLU``, ``Activation``,
  ``LeakyReLU``, ``ELU``, ``PReLU`` and fused ``activation=`` arguments): with
  levels ``{0..2^k-1}`` after non-negative activations, with a signed set otherwise;
  softmax/linear outputs and model outputs stay float;
* ``BatchNormalization`` and weightless layers (pooling, Add, Concatenate, Flatten, ...)
  stay float (BN is folded into the kernel scales at export);
* any other layer with weights is an error naming the layer, unless excluded.

:class:`QNetsScheme` hands tfmot an identity layout transform and a registry that
supports nothing on its own, so ``quantize_apply`` adds nothing we did not annotate.
"""

import dataclasses
import difflib
import warnings

from tf_qnets.keras2 import tfmot
from tf_qnets.keras2.backend import keras
from tf_qnets.keras2.configs import KERNEL_ATTRIBUTES, QNetsQuantizeConfig
from tf_qnets.keras2.int8 import Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.core.levels import resolve_levels
from tf_qnets.keras2.quantizer import QNetsQuantizer
from tf_qnets.tf.staircase import DEFAULT_ACTIVATION_GRADIENT, GRADIENTS

__all__ = ["QNetsScheme", "LayerPlan", "plan_quantization", "THRESHOLD_INITS", "FIRST_LAST"]

THRESHOLD_INITS = ("auto", "kmeans", "uniform")
FIRST_LAST = ("float", "int8", "low_bit")
PER_LAYER_KEYS = ("w_bits", "a_bits", "weight_scheme", "thresholds", "gradient",
                  "activation_gradient", "train_thresholds")

_NONNEGATIVE_ACTIVATIONS = {"relu", "relu6", "sigmoid", "hard_sigmoid", "softplus"}
_UNQUANTIZED_ACTIVATIONS = {"linear", "softmax", "log_softmax", None}
_SIGNED_ACTIVATION_LAYERS = ("LeakyReLU", "ELU", "PReLU")
_FLOAT_LAYERS_WITH_WEIGHTS = ("BatchNormalization", "LayerNormalization")


@dataclasses.dataclass
class LayerPlan:
    """The quantize config of one layer and how to initialise its thresholds."""

    config: QNetsQuantizeConfig
    weight_thresholds: str = "kmeans"
    output_thresholds: str = "kmeans"


class _IdentityLayout(tfmot.QuantizeLayoutTransform):
    def apply(self, model, layer_quantize_map):
        return model, layer_quantize_map


class _NothingRegistry(tfmot.QuantizeRegistry):
    def supports(self, layer):
        return False

    def get_quantize_config(self, layer):
        raise ValueError(
            f"Layer {layer.name!r} was not annotated by tf_qnets; it cannot be quantized implicitly.")


class QNetsScheme(tfmot.QuantizeScheme):
    """The tfmot scheme of tf_qnets: every quantized layer is annotated explicitly."""

    def get_layout_transformer(self):
        return _IdentityLayout()

    def get_quantize_registry(self):
        return _NothingRegistry()


def _activation_name(activation):
    if activation is None:
        return None
    name = keras.activations.serialize(activation)
    if isinstance(name, dict):
        name = name.get("config", {}).get("name", name.get("class_name"))
    return name


def _output_kind(layer):
    """``None`` (no activation quantizer), ``"unsigned"`` or ``"signed"``."""
    cls = type(layer).__name__
    if cls in KERNEL_ATTRIBUTES or cls == "Activation":
        name = _activation_name(getattr(layer, "activation", None))
        if name in _UNQUANTIZED_ACTIVATIONS:
            return None
        return "unsigned" if name in _NONNEGATIVE_ACTIVATIONS else "signed"
    if cls == "ReLU":
        slope = float(getattr(layer, "negative_slope", 0.0) or 0.0)
        return "signed" if slope > 0 else "unsigned"
    if cls in _SIGNED_ACTIVATION_LAYERS:
        return "signed"
    return None


def _check_layer_supported(layer, excluded):
    cls = type(layer).__name__
    if isinstance(layer, keras.Model):
        raise ValueError(
            f"Layer {layer.name!r} is a nested model ({cls}); tf_qnets quantizes flat models. "
            "Rebuild the model so that the inner model's layers are called directly "
            "(e.g. `keras.Model(inputs, inner(inputs))` -> call inner's layers in sequence).")
    if cls in KERNEL_ATTRIBUTES or layer.name in excluded:
        return
    if cls in _FLOAT_LAYERS_WITH_WEIGHTS or cls == "InputLayer" or not layer.weights:
        return
    return f"{layer.name!r} ({cls})"


def _warn_float_layers(found):
    """One warning naming every layer with weights that stays float for want of a quantizer."""
    if not found:
        return
    names = [text.split(" (")[0] for text in found]
    warnings.warn(
        f"Layers {', '.join(found)} have weights but tf_qnets has no quantizer for them "
        f"(supported: {', '.join(sorted(KERNEL_ATTRIBUTES))}); they stay float in training, "
        "and export_tflite stores them as float-calibrated int8 or reports them if the "
        f"converter cannot. Pass `exclude=[{', '.join(names)}]` to keep them float without "
        "this warning.", UserWarning, stacklevel=3)


def _validate_per_layer(model, per_layer, exclude):
    names = [layer.name for layer in model.layers]
    if per_layer is None:
        per_layer = {}
    if not isinstance(per_layer, dict):
        raise TypeError(
            "`per_layer` must be a dict {layer_name: {setting: value}} (or None to keep a layer "
            f"float), got {type(per_layer).__name__}.")
    if isinstance(exclude, str) or not hasattr(exclude, "__iter__"):
        raise TypeError(f"`exclude` must be a list of layer names, got {exclude!r}.")
    exclude = list(exclude)
    for argument, keys in (("per_layer", list(per_layer)), ("exclude", exclude)):
        for key in keys:
            if key not in names:
                hint = difflib.get_close_matches(str(key), names, n=3)
                raise ValueError(
                    f"`{argument}` names layer {key!r}, which is not in the model. "
                    + (f"Did you mean {hint}? " if hint else "")
                    + f"Layers: {names}.")
    for name, settings in per_layer.items():
        if settings is None:
            continue
        if not isinstance(settings, dict):
            raise TypeError(
                f"`per_layer[{name!r}]` must be a dict of settings or None, got {settings!r}.")
        unknown = sorted(set(settings) - set(PER_LAYER_KEYS))
        if unknown:
            raise ValueError(
                f"`per_layer[{name!r}]` has unknown settings {unknown}; allowed: {PER_LAYER_KEYS}.")
    return per_layer, set(exclude)


def _validate_choice(value, allowed, argument):
    if value not in allowed:
        raise ValueError(f"`{argument}` must be one of {allowed}, got {value!r}.")
    return value


def _int8_weight_quantizer(layer):
    return Int8WeightQuantizer(per_axis=type(layer).__name__ != "DepthwiseConv2D")


def _int8_output_quantizer():
    return Int8OutputQuantizer()


def plan_quantization(model, w_bits=3, a_bits=None, *, weight_scheme="pow2",
                      thresholds="auto", first_last="float", per_layer=None, exclude=(),
                      gradient=None, activation_gradient=DEFAULT_ACTIVATION_GRADIENT,
                      train_thresholds=False):
    """Decide the quantize config of every layer; returns ``{layer_name: LayerPlan}``.

    See :func:`tf_qnets.quantize_model` for the arguments.
    """
    _validate_choice(first_last, FIRST_LAST, "first_last")
    _validate_choice(thresholds, THRESHOLD_INITS, "thresholds")
    if gradient is not None:
        _validate_choice(gradient, GRADIENTS, "gradient")
    _validate_choice(activation_gradient, GRADIENTS, "activation_gradient")
    if not isinstance(train_thresholds, bool):
        raise TypeError(f"`train_thresholds` must be a bool, got {train_thresholds!r}.")
    # Resolve once for a clear error message even if no layer uses them.
    if w_bits is not None:
        resolve_levels(w_bits, "weights", "w_bits", weight_scheme=weight_scheme)
    if a_bits is not None:
        resolve_levels(a_bits, "activations", "a_bits")
    if w_bits is None and a_bits is None:
        raise ValueError("Nothing to quantize: `w_bits` and `a_bits` are both None.")
    per_layer, excluded = _validate_per_layer(model, per_layer, exclude)

    _warn_float_layers([found for found in (_check_layer_supported(layer, excluded)
                                            for layer in model.layers) if found])

    weight_layers = [layer for layer in model.layers if type(layer).__name__ in KERNEL_ATTRIBUTES]
    edge_layers = set()
    if weight_layers and first_last != "low_bit":
        edge_layers = {weight_layers[0].name, weight_layers[-1].name}
    output_names = {tensor.name for tensor in model.outputs}

    plans = {}
    for layer in model.layers:
        name = layer.name
        if name in excluded or (name in per_layer and per_layer[name] is None):
            continue
        settings = per_layer.get(name) or {}
        layer_w_bits = settings.get("w_bits", w_bits)
        layer_a_bits = settings.get("a_bits", a_bits)
        layer_scheme = settings.get("weight_scheme", weight_scheme)
        layer_thresholds = _validate_choice(
            settings.get("thresholds", thresholds), THRESHOLD_INITS,
            f"per_layer[{name!r}]['thresholds']")
        layer_train = settings.get("train_thresholds", train_thresholds)
        where = f"per_layer[{name!r}]" if settings else None

        weight_attr = weight_quantizer = output_quantizer = None
        cls = type(layer).__name__
        is_edge = name in edge_layers and "w_bits" not in settings
        if cls in KERNEL_ATTRIBUTES and layer_w_bits is not None:
            if is_edge and first_last == "int8":
                weight_attr, weight_quantizer = KERNEL_ATTRIBUTES[cls], _int8_weight_quantizer(layer)
            elif not is_edge:
                levels = resolve_levels(
                    layer_w_bits, "weights", f"{where}['w_bits']" if where else "w_bits",
                    weight_scheme=layer_scheme)
                layer_gradient = settings.get("gradient", gradient)
                if layer_gradient is None:
                    layer_gradient = "wide" if levels.num_steps == 1 else "exact"
                _validate_choice(layer_gradient, GRADIENTS, "gradient")
                weight_attr = KERNEL_ATTRIBUTES[cls]
                weight_quantizer = QNetsQuantizer(
                    levels, role="weights", gradient=layer_gradient,
                    train_thresholds=layer_train)

        kind = _output_kind(layer)
        is_model_output = any(
            node_tensor.name in output_names for node_tensor in _layer_outputs(layer))
        is_last = weight_layers and name == weight_layers[-1].name
        if is_last and first_last == "int8" and "a_bits" not in settings and kind is None:
            output_quantizer = _int8_output_quantizer()
        elif kind is not None and layer_a_bits is not None and not is_model_output:
            levels = resolve_levels(
                layer_a_bits, "activations", f"{where}['a_bits']" if where else "a_bits",
                signed=(kind == "signed"))
            layer_activation_gradient = _validate_choice(
                settings.get("activation_gradient", activation_gradient), GRADIENTS,
                f"per_layer[{name!r}]['activation_gradient']")
            output_quantizer = QNetsQuantizer(
                levels, role="activations", gradient=layer_activation_gradient,
                train_thresholds=layer_train)

        if weight_quantizer is None and output_quantizer is None:
            continue
        plans[name] = LayerPlan(
            config=QNetsQuantizeConfig(weight_attr, weight_quantizer, output_quantizer),
            weight_thresholds=layer_thresholds,   # "auto": k-means with a ternary dead zone from the data
            output_thresholds="uniform" if layer_thresholds == "auto" else layer_thresholds,
        )
    if not plans:
        raise ValueError(
            "No layer of the model is quantized with these settings (supported kernels: "
            f"{', '.join(sorted(KERNEL_ATTRIBUTES))}; the first and last of them stay float "
            "unless first_last='int8' or 'low_bit').")
    return plans


def _layer_outputs(layer):
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return []
    return output if isinstance(output, (list, tuple)) else [output]

"""The per-layer quantization plan, decided from a backend-neutral description of the layers.

``plan_layers`` turns ``quantize_model``'s options into one frozen :class:`LayerSpec` per
quantized layer; the Keras 2 and Keras 3 paths describe their model's layers as
:class:`LayerInfo` rows and build their own quantizers from the specs, so both paths read the
options the same way and refuse bad ones with the same message.

What a layer gets (``w_bits = b_w``, ``a_bits = b_a``; the kinds: ``tf_qnets.core.layer_kinds``):

* a kernel layer: a weight quantizer on ``b_w``-bit weight levels (``weight_scheme``), its
  gradient ``"wide"`` for binary weights, ``"exact"`` for ternary ones, else ``"smooth"``
  (:func:`tf_qnets.core.staircase.default_weight_gradient`; unless ``gradient`` says);
  the first and last kernel layers stay float (``first_last="float"``), get tfmot-style
  8-bit quantizers (``"int8"``) or the low-bit ones like every other layer (``"low_bit"``);
* a layer whose activation is not linear (ReLU, ``Activation``, kernel layers with an
  activation): an activation quantizer on ``b_a``-bit levels, unsigned after a
  non-negative activation, unless the layer is a model output;
* ``per_layer={name: {setting: value}}`` overrides any setting for one layer, ``None``
  (or ``exclude``) keeps it float.

Example::

    >>> infos = [LayerInfo("c1", "Conv2D", "relu"), LayerInfo("c2", "Conv2D", "relu"),
    ...          LayerInfo("out", "Dense", "linear", is_model_output=True)]
    >>> specs = plan_layers(infos, w_bits=3, a_bits=4)
    >>> sorted(specs), specs["c2"].weight.levels.levels, specs["c2"].output.levels.num_steps
    (['c1', 'c2'], (-4, -2, -1, 0, 1, 2, 4), 15)
"""

import dataclasses
import difflib
import numbers
import warnings
from typing import Optional, Union

from tf_qnets.core.layer_kinds import FLOAT_LAYERS_WITH_WEIGHTS, KERNEL_ATTRIBUTES, output_kind
from tf_qnets.core.levels import LevelSet, resolve_levels
from tf_qnets.core.staircase import DEFAULT_ACTIVATION_GRADIENT, GRADIENTS, default_weight_gradient

__all__ = [
    "ACTIVATION_KEYS",
    "FIRST_LAST",
    "FUSED_ACTIVATIONS",
    "ROLES",
    "check_quantizer_options",
    "Int8Spec",
    "LayerInfo",
    "LayerSpec",
    "PER_LAYER_KEYS",
    "QuantizerSpec",
    "THRESHOLD_INITS",
    "plan_layers",
    "split_activations",
    "split_per_layer",
    "unique_name",
]

THRESHOLD_INITS = ("auto", "kmeans", "uniform")
FIRST_LAST = ("float", "int8", "low_bit")
ROLES = ("weights", "activations")
PER_LAYER_KEYS = ("w_bits", "a_bits", "weight_scheme", "thresholds", "gradient",
                  "activation_gradient", "train_thresholds")


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """What the planner needs to know about one layer of the user's model.

    ``kind``: the Keras class name; ``activation``: the name of its activation function
    (``None`` if it has none); ``negative_slope``: a ``ReLU``'s slope; ``has_weights``:
    whether it owns weights; ``is_model``: a nested model; ``is_model_output``: one of its
    outputs is a model output; ``pads_border``: a pooling whose windows reach past the input
    border (:func:`tf_qnets.core.layer_kinds.pooling_pads_border`); ``is_identity``: it
    computes its input itself (:func:`tf_qnets.core.layer_kinds.is_identity_of`).
    """

    name: str
    kind: str
    activation: Optional[str] = None
    negative_slope: float = 0.0
    has_weights: bool = False
    is_model: bool = False
    is_model_output: bool = False
    pads_border: bool = False
    is_identity: bool = False


@dataclasses.dataclass(frozen=True)
class QuantizerSpec:
    """A sigmoid-sum quantizer: its levels, role (``"weights"``/``"activations"``), gradient."""

    levels: LevelSet
    role: str
    gradient: str
    train_thresholds: bool = False


@dataclasses.dataclass(frozen=True)
class Int8Spec:
    """An 8-bit affine quantizer (tfmot-style); ``per_axis``: one range per output channel."""

    per_axis: bool = False


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """The plan of one layer: which weight it quantizes and how, its output quantizer, and
    the threshold initialisation of each (``"kmeans"``, ``"auto"`` or ``"uniform"``)."""

    name: str
    weight_attr: Optional[str]
    weight: Union[QuantizerSpec, Int8Spec, None]
    output: Union[QuantizerSpec, Int8Spec, None]
    weight_thresholds: str = "kmeans"
    output_thresholds: str = "kmeans"


def check_quantizer_options(levels, role, gradient, train_thresholds, hard_forward_from):
    """A quantizer's constructor arguments, checked: ``(LevelSet, hard_forward_from)``.

    ``levels`` may be a LevelSet or a sequence of integers; ``hard_forward_from`` a
    temperature > 0 (returned as a float) or None. Bad values raise a ``ValueError`` /
    ``TypeError`` naming the argument.
    """
    levels = levels if isinstance(levels, LevelSet) else LevelSet(tuple(levels))
    if role not in ROLES:
        raise ValueError(f"`role` must be one of {ROLES}, got {role!r}.")
    if gradient not in GRADIENTS:
        raise ValueError(f"`gradient` must be one of {GRADIENTS}, got {gradient!r}.")
    if not isinstance(train_thresholds, bool):
        raise TypeError(f"`train_thresholds` must be a bool, got {train_thresholds!r}.")
    if hard_forward_from is not None:
        if isinstance(hard_forward_from, bool) or not isinstance(hard_forward_from, numbers.Real):
            raise TypeError(
                f"`hard_forward_from` must be a temperature (a number > 0) or None, got "
                f"{hard_forward_from!r}.")
        if not hard_forward_from > 0:
            raise ValueError(
                f"`hard_forward_from` must be a temperature > 0 or None, got {hard_forward_from!r}.")
        hard_forward_from = float(hard_forward_from)
    return levels, hard_forward_from


def _validate_choice(value, allowed, argument):
    if value not in allowed:
        raise ValueError(f"`{argument}` must be one of {allowed}, got {value!r}.")
    return value


def _unsupported(info, excluded):
    """``"'name' (Class)"`` for a layer with weights that no quantizer handles, else None."""
    if info.is_model:
        raise ValueError(
            f"Layer {info.name!r} is a nested model ({info.kind}); tf_qnets quantizes flat models. "
            "Rebuild the model so that the inner model's layers are called directly "
            "(e.g. `keras.Model(inputs, inner(inputs))` -> call inner's layers in sequence).")
    if info.kind in KERNEL_ATTRIBUTES or info.name in excluded:
        return None
    if info.kind in FLOAT_LAYERS_WITH_WEIGHTS or info.kind == "InputLayer" or not info.has_weights:
        return None
    return f"{info.name!r} ({info.kind})"


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
        "this warning.", UserWarning, stacklevel=5)


def _validate_per_layer(names, per_layer, exclude):
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


def _weight_spec(info, settings, where, w_bits, weight_scheme, gradient, train):
    levels = resolve_levels(w_bits, "weights", f"{where}['w_bits']" if where else "w_bits",
                            weight_scheme=weight_scheme)
    layer_gradient = settings.get("gradient", gradient)
    if layer_gradient is None:
        layer_gradient = default_weight_gradient(levels.num_steps)
    _validate_choice(layer_gradient, GRADIENTS, "gradient")
    return QuantizerSpec(levels, "weights", layer_gradient, train)


# Layers whose output an integer file requantizes to an int8 tensor of its own (TFLite's ADD,
# MUL and CONCATENATION round their result to the output scale): Keras rounds it the same way
# when nothing fuses it.
INT8_TENSOR_KINDS = frozenset({"BatchNormalization", "Add", "Multiply", "Concatenate",
                               "Rescaling", "Normalization", "AveragePooling2D"})
# ... of which these are rounded even before the first quantized layer: the pixel scaling and
# normalization a network does itself (MobileNetV3, EfficientNet), int8 ops of the file on
# the int8 input (a Normalization with mean 0 and variance 1 is no op: never rounded).
INT8_BEFORE_QUANTIZED_LAYERS = frozenset({"Rescaling", "Normalization"})


def _fuses(producer, reader, a_bits):
    """True when TFLite computes ``reader`` inside the op that computes ``producer``'s output,
    so that output is never stored: a BatchNormalization folded into the kernel layer before
    it, a quantized ReLU fused into the kernel layer, BN or Add before it (a quantized swish,
    sigmoid, ... is not: its staircase is a table of the int8 tensor before it). A Concatenate
    counts too: the converter gives a tensor that only a concatenation reads the
    concatenation's own scale, so the producer rounds once, to the concatenation's range."""
    if producer.kind in KERNEL_ATTRIBUTES and reader.kind == "BatchNormalization":
        return True
    if reader.kind == "Concatenate":
        return True
    return (a_bits is not None and _is_relu(reader)
            and output_kind(reader.kind, reader.activation, reader.negative_slope) is not None)


# Activations whose staircase the file computes inside the op before it (the requantization
# and a fused ReLU). Any other activation with a staircase (swish, sigmoid, tanh, GELU, a
# leaky ReLU) is decided on its int8 input's 256 codes
# (tf_qnets.export.rewrites.code_staircase), so that input is an int8 tensor of its own.
FUSED_ACTIVATIONS = ("relu", "relu6")


def _is_relu(info):
    if info.kind == "ReLU":
        return not info.negative_slope
    return info.kind == "Activation" and info.activation in FUSED_ACTIVATIONS


def _stored_in_int8(info, readers, infos_by_name, a_bits):
    """True for a layer whose output Keras keeps in float but an integer TFLite file stores
    as an int8 tensor: a BatchNormalization, an Add, a Multiply (MobileNetV3's hard-swish,
    squeeze-and-excitation), a Concatenate, a Rescaling, a Normalization that is not the
    identity (EfficientNet's input statistics), an AveragePooling2D (DenseNet's
    transitions: the file rounds the mean), or a linear kernel layer whose output some reader
    does not fuse."""
    linear_kernel = info.kind in KERNEL_ATTRIBUTES and info.activation in (None, "linear")
    if info.kind not in INT8_TENSOR_KINDS and not linear_kernel:
        return False
    if info.pads_border or info.is_identity:
        # TFLite's AVERAGE_POOL_2D keeps its input's scale; an identity is no op: no own range
        return False
    found = readers.get(info.name, ())
    # a reader that is not a listed layer (a Keras 3 operator node such as ``x + 3``) is an
    # op of its own in the file: it never fuses
    return bool(found) and not all(
        r in infos_by_name and _fuses(info, infos_by_name[r], a_bits) for r in found)


def _pooled_into_convolutions(info, readers, infos_by_name, last_kernel):
    """True for a global average pooling read only by convolutions inside the network
    (squeeze-and-excitation, MobileNetV3's head; not a classifier): the file stores its mean
    in int8 (MEAN) and the convolution after it computes from that tensor, so its staircase is
    aligned on the convolution's own accumulator. Folded into the convolution instead
    (``pooled_dense``), the accumulator unit is ``H W`` times finer and its staircase often
    has no alignment."""
    if info.kind != "GlobalAveragePooling2D":
        return False
    found = []
    for name in readers.get(info.name, ()):
        # EfficientNet pools without keepdims and reshapes to 1x1 (a Reshape keeps int8 codes)
        if name in infos_by_name and infos_by_name[name].kind == "Reshape":
            found.extend(readers.get(name, ()) or [None])
        else:
            found.append(name)
    return bool(found) and all(
        r in infos_by_name and infos_by_name[r].kind == "Conv2D" and r != last_kernel
        for r in found)


def plan_layers(infos, w_bits=3, a_bits=None, *, weight_scheme="pow2", thresholds="auto",
                first_last="float", per_layer=None, exclude=(), gradient=None,
                activation_gradient=DEFAULT_ACTIVATION_GRADIENT, train_thresholds=False,
                readers=None):
    """``{layer_name: LayerSpec}`` for the quantized layers among ``infos`` (model order).

    The arguments are :func:`tf_qnets.quantize_model`'s; every bad value raises a
    ``ValueError``/``TypeError`` naming the argument. Layers with weights that no quantizer
    handles stay float, with one warning naming them.
    """
    infos = list(infos)
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
    per_layer, excluded = _validate_per_layer([info.name for info in infos], per_layer, exclude)

    _warn_float_layers([found for found in (_unsupported(info, excluded) for info in infos)
                        if found])

    kernel_layers = [info for info in infos if info.kind in KERNEL_ATTRIBUTES]
    edge_layers = set()
    if kernel_layers and first_last != "low_bit":
        edge_layers = {kernel_layers[0].name, kernel_layers[-1].name}
    last_kernel = kernel_layers[-1].name if kernel_layers else None

    infos_by_name = {info.name: info for info in infos}
    specs = {}
    for info in infos:
        name = info.name
        if name in excluded or (name in per_layer and per_layer[name] is None):
            continue
        settings = per_layer.get(name) or {}
        layer_w_bits = settings.get("w_bits", w_bits)
        layer_a_bits = settings.get("a_bits", a_bits)
        layer_thresholds = _validate_choice(
            settings.get("thresholds", thresholds), THRESHOLD_INITS,
            f"per_layer[{name!r}]['thresholds']")
        layer_train = settings.get("train_thresholds", train_thresholds)
        where = f"per_layer[{name!r}]" if settings else None

        weight_attr = weight = output = None
        is_edge = name in edge_layers and "w_bits" not in settings
        if info.kind in KERNEL_ATTRIBUTES and layer_w_bits is not None:
            if is_edge and first_last == "int8":
                weight_attr = KERNEL_ATTRIBUTES[info.kind]
                weight = Int8Spec(per_axis=info.kind != "DepthwiseConv2D")
            elif not is_edge:
                weight_attr = KERNEL_ATTRIBUTES[info.kind]
                weight = _weight_spec(info, settings, where, layer_w_bits,
                                      settings.get("weight_scheme", weight_scheme), gradient,
                                      layer_train)

        kind = output_kind(info.kind, info.activation, info.negative_slope)
        if (name == last_kernel and first_last == "int8" and "a_bits" not in settings
                and kind is None):
            output = Int8Spec()
        elif kind is not None and layer_a_bits is not None and not info.is_model_output:
            levels = resolve_levels(
                layer_a_bits, "activations", f"{where}['a_bits']" if where else "a_bits",
                signed=(kind == "signed"))
            layer_activation_gradient = _validate_choice(
                settings.get("activation_gradient", activation_gradient), GRADIENTS,
                f"per_layer[{name!r}]['activation_gradient']")
            output = QuantizerSpec(levels, "activations", layer_activation_gradient, layer_train)

        # only from the first quantized layer on (its own output included): the user's layers
        # before it (an input BatchNormalization, say) are left as they are (the model input's own int8 rounding
        # is not simulated either: docs/export.md, "What stays approximate")
        if (output is None and readers is not None and a_bits is not None
                and (specs or weight is not None or info.kind in INT8_BEFORE_QUANTIZED_LAYERS)
                and not info.is_model_output
                and (_stored_in_int8(info, readers, infos_by_name, a_bits)
                     or _pooled_into_convolutions(info, readers, infos_by_name, last_kernel))):
            output = Int8Spec()
        if weight is None and output is None:
            continue
        specs[name] = LayerSpec(
            name=name, weight_attr=weight_attr, weight=weight, output=output,
            # "auto": k-means with a ternary dead zone from the data
            weight_thresholds=layer_thresholds,
            output_thresholds="uniform" if layer_thresholds == "auto" else layer_thresholds,
        )
    if readers is not None:
        specs = _quantize_after_max_pools(specs, infos, readers, per_layer, excluded)
    if not specs:
        raise ValueError(
            "No layer of the model is quantized with these settings (supported kernels: "
            f"{', '.join(sorted(KERNEL_ATTRIBUTES))}; the first and last of them stay float "
            "unless first_last='int8' or 'low_bit').")
    return specs


MAX_POOLS = frozenset({"MaxPooling1D", "MaxPooling2D", "MaxPooling3D"})


def _quantize_after_max_pools(specs, infos, readers, per_layer, excluded):
    """``specs`` with the activation quantizer of each ReLU (a ``ReLU`` layer, or a kernel
    layer's fused ReLU) whose only reader is a max pooling moved onto that pooling.

    The staircase ``Q`` is non-decreasing, so ``maxpool(Q(x)) = Q(maxpool(x))`` exactly
    (and the soft quantizer of training is increasing, so the forward is the same there too):
    quantizing after the pooling computes the same model on a quarter of the elements (2x2
    pooling), and the pooling keeps for its backward the ReLU output that the ReLU's own
    backward keeps anyway, where it kept the quantizer's output beside it. The exporter moves
    the staircase back onto the ReLU (:func:`tf_qnets.core.network.staircases_before_max_pools`),
    so the integer file is the same."""
    by_name = {info.name: info for info in infos}
    moved = {}
    for name, spec in specs.items():
        info = by_name[name]
        found = readers.get(name, ())
        if not isinstance(spec.output, QuantizerSpec) or len(found) != 1:
            continue
        pool = by_name.get(found[0])
        if (pool is None or pool.kind not in MAX_POOLS or pool.name in specs
                or pool.name in excluded or pool.name in (per_layer or {})
                or pool.is_model_output or info.is_model_output):
            continue
        if not (_is_relu(info) or (info.kind in KERNEL_ATTRIBUTES
                                   and info.activation in FUSED_ACTIVATIONS)):
            continue
        moved[name] = pool.name
    if not moved:
        return specs
    result = {}
    for info in infos:             # model order
        spec = specs.get(info.name)
        if info.name in moved:
            pool = moved[info.name]
            if spec.weight is not None:
                result[info.name] = dataclasses.replace(spec, output=None)
            result[pool] = LayerSpec(name=pool, weight_attr=None, weight=None,
                                     output=spec.output,
                                     output_thresholds=spec.output_thresholds)
        elif spec is not None and info.name not in result:
            result[info.name] = spec
    return result


# per_layer settings that concern a layer's activation staircase (they follow it when
# split_activations moves the staircase onto a layer of its own)
ACTIVATION_KEYS = ("a_bits", "activation_gradient", "thresholds", "train_thresholds")


def split_activations(infos, a_bits, per_layer=None, exclude=()):
    """``{kernel layer name: name of its new Activation layer}`` for the kernel layers whose
    activation ``quantize_model`` moves onto a layer of its own.

    A kernel layer with a quantized activation that is not a ReLU (``Conv2D(...,
    activation="swish")``, EfficientNet's squeeze-and-excitation convolutions) computes
    ``f(z)`` inside the layer, so ``z`` is never an int8 tensor that the Keras model rounds
    as the integer file does. Split into the kernel layer (linear) and ``Activation(f)``,
    the same network gets an 8-bit output quantizer on ``z`` and its staircase becomes a
    table of ``z``'s 256 codes in the file (:mod:`tf_qnets.export.rewrites.code_staircase`),
    exact. The new layer is called ``<kernel name>_activation`` (with a number appended if
    that name is taken).

    >>> infos = [LayerInfo("se", "Conv2D", "swish", has_weights=True),
    ...          LayerInfo("c", "Conv2D", "relu", has_weights=True)]
    >>> split_activations(infos, a_bits=4)
    {'se': 'se_activation'}
    """
    per_layer = per_layer if isinstance(per_layer, dict) else {}   # plan_layers checks it
    exclude = () if isinstance(exclude, str) else exclude
    taken = {info.name for info in infos}
    found = {}
    for info in infos:
        settings = per_layer.get(info.name, {})
        if settings is not None and not isinstance(settings, dict):
            continue
        if (info.kind not in KERNEL_ATTRIBUTES or info.is_model_output
                or info.activation in (None, "linear") + FUSED_ACTIVATIONS
                or output_kind(info.kind, info.activation) is None
                or info.name in exclude or settings is None
                or settings.get("a_bits", a_bits) is None):
            continue
        found[info.name] = unique_name(f"{info.name}_activation", taken)
    return found


def unique_name(base, taken):
    """``base``, or ``base_1``, ``base_2``, ... : the first not in ``taken`` (which gets it)."""
    name, number = base, 0
    while name in taken:
        number += 1
        name = f"{base}_{number}"
    taken.add(name)
    return name


def split_per_layer(per_layer, splits):
    """``per_layer`` with each split kernel layer's activation settings (``ACTIVATION_KEYS``)
    copied to its new Activation layer (:func:`split_activations`)."""
    if not isinstance(per_layer, dict) or not splits:
        return per_layer
    result = dict(per_layer)
    for kernel, activation in splits.items():
        settings = per_layer.get(kernel)
        if isinstance(settings, dict):
            moved = {key: value for key, value in settings.items() if key in ACTIVATION_KEYS}
            if moved:
                result[activation] = moved
    return result

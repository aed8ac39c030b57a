"""The one module that imports tensorflow-model-optimization and reads its private state.

Everything tf_qnets needs from tfmot's Keras quantization API is re-exported here, and
the few internals of tfmot's ``QuantizeWrapperV2`` that tf_qnets reads (its weight and
output quantizer variables) are read through the functions below, so that a tfmot
release that renames them breaks one file.

tfmot sets ``TF_USE_LEGACY_KERAS=1`` in the environment when it is imported; this module
puts the variable back as it was, so that using the Keras 2 path does not change which
Keras the rest of the user's process gets.
"""

import os
import types

from tf_qnets.keras2.backend import tf

_before = os.environ.get("TF_USE_LEGACY_KERAS")
# tf.keras is resolved on first use, from the variable's value then: resolve it under the
# user's own setting before tfmot's import sets the variable and reads tf.keras.
hasattr(tf.keras, "layers")
try:
    from tensorflow_model_optimization.python.core.quantization.keras import (  # noqa: E402
        quantize as _quantize,
        quantize_annotate as _annotate,
        quantize_config as _config,
        quantize_layout_transform as _layout,
        quantize_registry as _registry,
        quantize_scheme as _scheme,
        quantize_wrapper as _wrapper,
        quantize_layer as _quantize_layer,
        quantizers as _quantizers,
        utils as _utils,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (  # noqa: E402,E501
        model_transformer as _model_transformer,
        transforms as _transforms,
    )
finally:
    if _before is None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = _before

Quantizer = _quantizers.Quantizer
LastValueQuantizer = _quantizers.LastValueQuantizer
MovingAverageQuantizer = _quantizers.MovingAverageQuantizer
QuantizeConfig = _config.QuantizeConfig
QuantizeWrapper = _wrapper.QuantizeWrapper
QuantizeWrapperV2 = _wrapper.QuantizeWrapperV2
QuantizeAnnotate = _annotate.QuantizeAnnotate
QuantizeLayoutTransform = _layout.QuantizeLayoutTransform
QuantizeRegistry = _registry.QuantizeRegistry
QuantizeScheme = _scheme.QuantizeScheme
quantize_scope = _quantize.quantize_scope
QuantizeLayer = _quantize_layer.QuantizeLayer
ModelTransformer = _model_transformer.ModelTransformer
Transform = _transforms.Transform
LayerPattern = _transforms.LayerPattern
LayerNode = _transforms.LayerNode


def serialize_layer(layer):
    """A layer's config in the form tfmot's graph transforms read."""
    return _utils.serialize_layer(layer, use_legacy_format=True)


__all__ = [
    "LayerNode",
    "LayerPattern",
    "ModelTransformer",
    "QuantizeLayer",
    "Transform",
    "serialize_layer",
    "LastValueQuantizer",
    "MovingAverageQuantizer",
    "QuantizeAnnotate",
    "QuantizeConfig",
    "QuantizeLayoutTransform",
    "QuantizeRegistry",
    "QuantizeScheme",
    "QuantizeWrapper",
    "QuantizeWrapperV2",
    "Quantizer",
    "output_quantizer_variables",
    "output_quantizers",
    "quantize_apply",
    "quantize_scope",
    "weight_name",
    "weight_quantizer_variables",
]


def quantize_apply(model, scheme, wrapper_class=None):
    """tfmot's ``quantize_apply``, optionally wrapping the annotated layers in
    ``wrapper_class`` (a ``QuantizeWrapperV2`` subclass) instead of ``QuantizeWrapperV2``.

    ``quantize_apply`` builds its wrappers as ``quantize_wrapper.QuantizeWrapperV2(...)``
    through its module's reference to ``quantize_wrapper``; for the call, that reference
    points to a copy of the module's namespace whose ``QuantizeWrapperV2`` is
    ``wrapper_class`` (the module itself is untouched, so tfmot's own ``super()`` calls still
    resolve). The model comes out with the right wrappers in one pass instead of being cloned
    once more to swap them.
    """
    if wrapper_class is None:
        return _quantize.quantize_apply(model, scheme=scheme)
    if not issubclass(wrapper_class, _wrapper.QuantizeWrapperV2):
        raise TypeError(f"`wrapper_class` must subclass QuantizeWrapperV2, got {wrapper_class!r}.")
    namespace = types.SimpleNamespace(**vars(_wrapper))
    namespace.QuantizeWrapperV2 = wrapper_class
    original = _quantize.quantize_wrapper
    _quantize.quantize_wrapper = namespace
    try:
        return _quantize.quantize_apply(model, scheme=scheme)
    finally:
        _quantize.quantize_wrapper = original


def weight_quantizer_variables(wrapper):
    """``[(weight, quantizer, variables)]`` of a built tfmot wrapper (its ``_weight_vars``)."""
    return list(getattr(wrapper, "_weight_vars", []) or [])


def output_quantizers(wrapper):
    """The output quantizers of a built tfmot wrapper (its ``_output_quantizers``)."""
    return list(getattr(wrapper, "_output_quantizers", []) or [])


def output_quantizer_variables(wrapper):
    """The variables tfmot created for a wrapper's output quantizer (``_output_quantizer_vars``)."""
    return getattr(wrapper, "_output_quantizer_vars", None)


def weight_name(wrapper, weight):
    """The short name (``"kernel"``, ``"depthwise_kernel"``) tfmot gives a quantized weight."""
    return wrapper._weight_name(weight.name)

"""Move a kernel layer's non-ReLU activation onto an ``Activation`` layer of its own (Keras 2).

``Conv2D(..., activation="swish")`` computes ``swish(z)`` inside the layer; split into
``Conv2D(..., activation="linear") -> Activation("swish")`` it computes the same function, and
``quantize_model`` can then round ``z`` to int8 as the integer file does, which makes the
file's staircase exact (:func:`tf_qnets.core.plan.split_activations` says which layers and
why). The split is a tfmot graph transform, so it works on Sequential and Functional models
alike; the user's model is not modified (a new model is built, the weights copied).

Example::

    split = split_kernel_activations(model, {"se_reduce": "se_reduce_activation"})
    split.get_layer("se_reduce").activation.__name__        # "linear"
"""

import copy

from tf_qnets.core.layer_kinds import KERNEL_ATTRIBUTES
from tf_qnets.keras2 import tfmot

__all__ = ["SplitActivationTransform", "split_kernel_activations"]


class SplitActivationTransform(tfmot.Transform):
    """tfmot transform: ``Kernel(activation=f) -> Kernel(linear) -> Activation(f)`` for the
    kernel layers named in ``splits`` (``{kernel name: activation layer name}``)."""

    def __init__(self, splits):
        self.splits = dict(splits)

    def pattern(self):
        return tfmot.LayerPattern("|".join(sorted(KERNEL_ATTRIBUTES)))

    def replacement(self, match_layer):
        config = match_layer.layer["config"]
        new_name = self.splits.get(config["name"])
        if new_name is None or config.get("activation") in (None, "linear"):
            return match_layer
        kernel = copy.deepcopy(match_layer.layer)
        activation = kernel["config"]["activation"]
        kernel["config"]["activation"] = "linear"
        kernel_node = tfmot.LayerNode(kernel, weights=match_layer.weights,
                                      metadata=match_layer.metadata)
        layer = {"class_name": "Activation", "name": new_name,
                 "config": {"name": new_name, "activation": activation,
                            "trainable": config.get("trainable", True),
                            "dtype": config.get("dtype", "float32")}}
        return tfmot.LayerNode(layer, input_layers=[kernel_node])

    def custom_objects(self):
        return {}


def split_kernel_activations(model, splits):
    """A new model in which each kernel layer named in ``splits`` is followed by its activation
    as an ``Activation`` layer (named by ``splits``); ``model`` itself when ``splits`` is empty."""
    if not splits:
        return model
    transformed, _ = tfmot.ModelTransformer(model, [SplitActivationTransform(splits)],
                                            set(splits), {}).transform()
    return transformed

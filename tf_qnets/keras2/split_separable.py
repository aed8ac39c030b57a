"""Split each ``SeparableConv2D`` into ``DepthwiseConv2D -> Conv2D(1x1)`` (Keras 2).

The Keras 2 side of :mod:`tf_qnets.core.separable` (which says why and how): a tfmot graph
transform, so that Sequential and Functional models are both rebuilt; the user's model is not
modified (a new model is built, the weights copied: the depthwise kernel to the
``DepthwiseConv2D``, the pointwise kernel and bias to the ``Conv2D``).

Example::

    split = split_separable_convolutions(model, {"block2_sepconv1": "block2_sepconv1_depthwise"})
    type(split.get_layer("block2_sepconv1")).__name__          # "Conv2D"
"""

from tf_qnets.core.separable import SEPARABLE, split_configs, split_weights
from tf_qnets.keras2 import tfmot

__all__ = ["SplitSeparableTransform", "split_separable_convolutions"]


class SplitSeparableTransform(tfmot.Transform):
    """tfmot transform: ``SeparableConv2D -> DepthwiseConv2D -> Conv2D`` for the layers named
    in ``splits`` (``{separable name: depthwise name}``)."""

    def __init__(self, splits):
        self.splits = dict(splits)

    def pattern(self):
        return tfmot.LayerPattern(SEPARABLE)

    def replacement(self, match_layer):
        config = match_layer.layer["config"]
        depthwise_name = self.splits.get(config["name"])
        if depthwise_name is None:
            return match_layer
        depthwise, pointwise = split_configs(config, depthwise_name)
        depthwise_node = tfmot.LayerNode({"class_name": "DepthwiseConv2D", "config": depthwise,
                                          "name": depthwise_name})
        return tfmot.LayerNode({"class_name": "Conv2D", "config": pointwise,
                                "name": config["name"]}, input_layers=[depthwise_node])

    def custom_objects(self):
        return {}


def split_separable_convolutions(model, splits):
    """A new model in which each ``SeparableConv2D`` named in ``splits`` is a
    ``DepthwiseConv2D`` (named by ``splits``) followed by a 1x1 ``Conv2D`` of its own name;
    ``model`` itself when ``splits`` is empty."""
    if not splits:
        return model
    transformed, _ = tfmot.ModelTransformer(model, [SplitSeparableTransform(splits)],
                                            set(splits), {}).transform()
    for name, depthwise_name in splits.items():
        depthwise, pointwise = split_weights(model.get_layer(name).get_weights())
        transformed.get_layer(depthwise_name).set_weights(depthwise)
        transformed.get_layer(name).set_weights(pointwise)
    return transformed

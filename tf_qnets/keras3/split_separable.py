"""Split each ``SeparableConv2D`` into ``DepthwiseConv2D -> Conv2D(1x1)`` (Keras 3).

The Keras 3 side of :mod:`tf_qnets.core.separable` (which says why and how), built like
:mod:`tf_qnets.keras3.split_activation`: a new model (Sequential or Functional) in which the
separable layer's name belongs to the 1x1 ``Conv2D``, called on the output of a new
``DepthwiseConv2D``; the user's model and layers are not touched, the weights are copied.

Example::

    split = split_separable_convolutions(model, {"sep": "sep_depthwise"})
    type(split.get_layer("sep_depthwise")).__name__           # "DepthwiseConv2D"
"""

import keras

from tf_qnets.core.separable import split_configs, split_weights

__all__ = ["split_separable_convolutions"]


def split_separable_convolutions(model, splits):
    """A new model in which each ``SeparableConv2D`` named in ``splits`` is a
    ``DepthwiseConv2D`` (named by ``splits``) followed by a 1x1 ``Conv2D`` of its own name;
    ``model`` itself when ``splits`` is empty."""
    if not splits:
        return model
    parts = {}
    for name, depthwise_name in splits.items():
        depthwise, pointwise = split_configs(model.get_layer(name).get_config(), depthwise_name)
        parts[name] = (keras.layers.DepthwiseConv2D.from_config(depthwise),
                       keras.layers.Conv2D.from_config(pointwise))

    def clone(layer):
        if layer.name in parts:
            return parts[layer.name][1]
        return layer.__class__.from_config(layer.get_config())

    if isinstance(model, keras.Sequential):
        layers = []
        for layer in model.layers:
            if layer.name in parts:
                layers.append(parts[layer.name][0])
            layers.append(clone(layer))
        source = model.inputs[0]
        inputs = keras.Input(batch_shape=source.shape, dtype=source.dtype, name=source.name)
        split = keras.Sequential([inputs] + layers, name=model.name, trainable=model.trainable)
    else:
        def call(layer, *args, **kwargs):
            for name, (depthwise, pointwise) in parts.items():
                if layer is pointwise:
                    return layer(depthwise(*args, **kwargs))
            return layer(*args, **kwargs)

        split = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name in parts:
            depthwise, pointwise = split_weights(layer.get_weights())
            split.get_layer(splits[layer.name]).set_weights(depthwise)
            split.get_layer(layer.name).set_weights(pointwise)
        else:
            split.get_layer(layer.name).set_weights(layer.get_weights())
    return split

"""Move a kernel layer's non-ReLU activation onto an ``Activation`` layer of its own (Keras 3).

The Keras 3 counterpart of :mod:`tf_qnets.keras2.split_activation`:
``Conv2D(..., activation="swish")`` becomes ``Conv2D(..., activation="linear") ->
Activation("swish", name=...)`` in a new model (the same function; the user's model and
layers are not touched), so that ``quantize_model`` rounds the pre-activation to int8 as
the integer file does (:func:`tf_qnets.core.plan.split_activations` says which layers).

Example::

    split = split_kernel_activations(model, {"se_reduce": "se_reduce_activation"})
    split.get_layer("se_reduce_activation").activation      # the swish
"""

import keras

__all__ = ["split_kernel_activations"]


def _linear_copy(layer, splits):
    config = layer.get_config()
    if layer.name in splits:
        config["activation"] = "linear"
    return layer.__class__.from_config(config)


def _activation_layer(layer, name):
    return keras.layers.Activation(layer.activation, name=name, dtype=layer.dtype_policy)


def split_kernel_activations(model, splits):
    """A new model in which each kernel layer named in ``splits`` computes linearly and is
    followed by its activation as an ``Activation`` layer named by ``splits`` (weights
    copied); ``model`` itself when ``splits`` is empty."""
    if not splits:
        return model
    if isinstance(model, keras.Sequential):
        layers = []
        for layer in model.layers:
            layers.append(_linear_copy(layer, splits))
            if layer.name in splits:
                layers.append(_activation_layer(layer, splits[layer.name]))
        source = model.inputs[0]
        inputs = keras.Input(batch_shape=source.shape, dtype=source.dtype, name=source.name)
        split = keras.Sequential([inputs] + layers, name=model.name, trainable=model.trainable)
    else:
        originals = {layer.name: layer for layer in model.layers}

        def call(layer, *args, **kwargs):
            output = layer(*args, **kwargs)
            if layer.name in splits:
                output = _activation_layer(originals[layer.name], splits[layer.name])(output)
            return output

        split = keras.models.clone_model(model, clone_function=lambda l: _linear_copy(l, splits),
                                         call_function=call)
    for layer in model.layers:
        if layer.weights:
            split.get_layer(layer.name).set_weights(layer.get_weights())
    return split

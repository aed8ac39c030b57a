"""TensorFlow implementations of described layers: what the export graph calls.

A :class:`tf_qnets.core.network.LayerDescription` names a Keras class and its inference
configuration; :func:`build_layer` makes the tf_keras layer of that class with that
configuration and weights, whichever Keras (and backend) trained the model. Activation
functions are taken from :data:`ACTIVATIONS` by the description's (Keras 3) name, so that
a name means one function on both paths (``hard_sigmoid`` is ``relu6(x + 3) / 6``;
tf_keras' own ``0.2 x + 0.5`` is ``hard_sigmoid_keras2``).

A Keras 2 model may contain a layer class tf_keras does not define (the user's own): the
exporter passes the model's own layer objects as ``native`` and that layer is called as it
is. A Keras 3 model has no such fallback (its layers may compute in JAX): the error names
the layer and its class.

Example::

    layer = build_layer(description)          # a built tf_keras layer with the trained weights
    y = layer(x, training=False)
"""

import inspect

import numpy as np

from tf_qnets.core.layer_kinds import KERNEL_ATTRIBUTES
from tf_qnets.keras2.backend import keras, tf

__all__ = ["ACTIVATIONS", "activation_function", "build_layer", "LayerRebuildError"]


class LayerRebuildError(ValueError):
    """A described layer has no TensorFlow implementation the exporter can build."""


def _hard_sigmoid(x):
    return tf.nn.relu6(x + 3.0) * (1.0 / 6.0)


def _hard_silu(x):
    return x * _hard_sigmoid(x)


ACTIVATIONS = {
    None: tf.identity,
    "linear": tf.identity,
    "relu": tf.nn.relu,
    "relu6": tf.nn.relu6,
    "sigmoid": tf.sigmoid,
    "tanh": tf.tanh,
    "softmax": tf.nn.softmax,
    "log_softmax": tf.nn.log_softmax,
    "silu": tf.nn.silu,
    "swish": tf.nn.silu,
    "hard_sigmoid": _hard_sigmoid,
    "hard_silu": _hard_silu,
    "hard_swish": _hard_silu,
    "hard_sigmoid_keras2": lambda x: tf.clip_by_value(0.2 * x + 0.5, 0.0, 1.0),
    "elu": tf.nn.elu,
    "selu": tf.nn.selu,
    "softplus": tf.nn.softplus,
    "softsign": tf.nn.softsign,
    "gelu": lambda x: tf.nn.gelu(x, approximate=False),
    "leaky_relu": lambda x: tf.nn.leaky_relu(x, 0.2),
    "exponential": tf.exp,
}


def activation_function(name, layer_name="layer"):
    """The TensorFlow function of the activation called ``name`` (see :data:`ACTIVATIONS`)."""
    if callable(name):
        return name
    function = ACTIVATIONS.get(name)
    if function is None:
        raise LayerRebuildError(
            f"Layer {layer_name!r}: export knows no TensorFlow function for the activation "
            f"{name!r}; known: {sorted(k for k in ACTIVATIONS if k)}.")
    # a named function keeps the converter's fusions (relu, relu6) and the graph readable
    return function


def _accepted_arguments(cls):
    names = {"name"}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters
        names.update(p for p in parameters if p != "self")
        if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
            break
    return names


def _config(cls, description, overrides):
    config = dict(description.config)
    config.update(overrides)
    config["name"] = description.name
    accepted = _accepted_arguments(cls)
    config = {key: value for key, value in config.items() if key in accepted}
    if "activation" in config:
        config["activation"] = activation_function(config["activation"], description.name)
    if description.class_name == "Activation":
        config["activation"] = activation_function(description.config.get("activation"),
                                                   description.name)
    return config


def _assign_weights(layer, description):
    targets = layer.weights
    values = description.weights
    attribute = KERNEL_ATTRIBUTES.get(description.class_name)
    by_name = []
    for variable in targets:
        name = variable.name.split("/")[-1].split(":")[0]
        if name == attribute:
            name = "kernel"
        by_name.append(values.get(name))
    if any(value is None for value in by_name) or len(values) != len(targets):
        by_name = list(values.values())   # same weights, other names: Keras' order
    if len(by_name) != len(targets) or any(
            tuple(np.shape(v)) != tuple(t.shape) for v, t in zip(by_name, targets)):
        raise LayerRebuildError(
            f"Layer {description.name!r} ({description.class_name}): its weights "
            f"{[(k, np.shape(v)) for k, v in values.items()]} do not fit the TensorFlow layer's "
            f"{[(t.name, tuple(t.shape)) for t in targets]}.")
    for variable, value in zip(targets, by_name):
        variable.assign(np.asarray(value, variable.dtype.as_numpy_dtype))


# ``keras.ops`` calls a Keras 3 graph may hold (``x + 3.0`` in MobileNetV3): class "op.<Name>".
OPERATIONS = {
    "Add": tf.add,
    "Subtract": tf.subtract,
    "Multiply": tf.multiply,
    "Divide": tf.divide,
    "TrueDivide": tf.divide,
    "Maximum": tf.maximum,
    "Minimum": tf.minimum,
}


class _Operation:
    """A described ``keras.ops`` call: its function applied to its tensors and constants."""

    def __init__(self, function, arguments):
        self.function = function
        self.arguments = arguments

    def __call__(self, inputs, training=None):
        tensors = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        values = [tensors[value] if kind == "tensor" else np.float32(value)
                  for kind, value in self.arguments]
        return self.function(*values)


def _operation(description):
    name = description.class_name[len("op."):]
    function = OPERATIONS.get(name)
    if function is None:
        raise LayerRebuildError(
            f"Operation {description.name!r} (keras.ops {name}) has no TensorFlow lowering in "
            f"export; supported operations: {sorted(OPERATIONS)}. Use a Keras layer instead.")
    return _Operation(function, description.config["arguments"])


def build_layer(description, native=None, weights=True, **overrides):
    """The built tf_keras layer of ``description`` (``overrides`` replace configuration
    entries; ``weights`` False leaves the new layer's own initial weights); a callable for a
    described ``keras.ops`` call (class ``"op.<Name>"``)."""
    if description.class_name.startswith("op."):
        return _operation(description)
    cls = getattr(keras.layers, description.class_name, None)
    if not isinstance(cls, type):
        if native is not None:
            return native
        raise LayerRebuildError(
            f"Layer {description.name!r} is a {description.class_name}, which export_tflite "
            "cannot build in TensorFlow (it rebuilds standard Keras layers from their "
            "configuration). Replace it by standard layers, or exclude it from the exported part.")
    try:
        layer = cls.from_config(_config(cls, description, overrides))
        layer.build(description.input_shape)
    except LayerRebuildError:
        raise
    except Exception as error:  # noqa: BLE001 - any Keras complaint, named for the user
        if native is not None:
            return native
        raise LayerRebuildError(
            f"Layer {description.name!r} ({description.class_name}): tf_keras could not build "
            f"it from its configuration {description.config}: {error}") from None
    if weights and layer.weights:
        _assign_weights(layer, description)
    return layer

"""A trained quantized network described without a framework: what the exporter lowers.

Both Keras paths describe a :func:`tf_qnets.quantize_model` result in these terms
(:mod:`tf_qnets.keras2.describe_network`, :mod:`tf_qnets.keras3.describe_network`), from any
backend, as NumPy arrays and plain values; :mod:`tf_qnets.export` lowers the description to
an integer TFLite file and never looks at the Keras objects again. So a model trained on
Keras 2, on Keras 3 with TensorFlow or on Keras 3 with JAX gives the same file.

A network is its input tensors, its layer calls (:class:`NodeDescription`) in execution
order and its output tensors; tensors are named by string ids. Each call holds its layer
(:class:`LayerDescription`):

* ``class_name`` and ``config``: the Keras class and its configuration, reduced to what
  inference needs (no initializers, regularizers, constraints or dtype policies);
* ``weights``: the layer's own weights by short name (``kernel``, ``bias``, ``gamma``,
  ``moving_mean``, ...), in the layer's order, as float arrays; a kernel layer's kernel is
  always ``"kernel"`` (a ``DepthwiseConv2D`` keeps Keras' ``(kh, kw, in, multiplier)`` shape);
* ``weight_quantizer`` / ``output_quantizer``: the trained hard quantizers, a
  :class:`Staircase` (the integer levels, ``alpha``, ``beta`` and the thresholds: the
  staircase ``y = alpha * (-o + sum_i s_i [beta x > b_i])``) or an :class:`Int8Range`
  (an 8-bit min/max quantizer; for a kernel, also the kernel as Keras quantized it).

Example::

    >>> import numpy as np
    >>> from tf_qnets.core.levels import activation_levels
    >>> relu = LayerDescription("relu", "ReLU", {"max_value": None}, {}, (None, 4),
    ...     output_quantizer=Staircase(0.5, 2.0, np.array([0.5, 1.5, 2.5]), activation_levels(2)))
    >>> net = NetworkDescription(["x"], [(None, 4)], [NodeDescription(relu, ["x"], ["y"])], ["y"])
    >>> net.node_by_name["relu"].layer.output_quantizer.levels.levels
    (0, 1, 2, 3)
"""

import dataclasses

import numpy as np

__all__ = ["Int8Range", "LayerDescription", "NetworkDescription", "NodeDescription", "Staircase",
           "channel_axis", "is_linear", "portable_config", "relu_cap",
           "staircases_before_max_pools"]

# Configuration keys that do not change what a layer computes at inference.
_TRAINING_ONLY_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
_TRAINING_ONLY_KEYS = frozenset({"dtype", "trainable", "activity_regularizer", "lora_rank",
                                 "lora_alpha", "quantization_config", "seed", "build_config",
                                 "batch_input_shape", "autocast"})


@dataclasses.dataclass(frozen=True)
class Staircase:
    """A trained hard staircase ``y = alpha * (-o + sum_i s_i [beta x > b_i])`` over ``levels``
    (a :class:`tf_qnets.core.levels.LevelSet`; ``thresholds`` the ``b_i``)."""

    alpha: float
    beta: float
    thresholds: np.ndarray
    levels: object

    def as_tuple(self):
        """``(alpha, beta, thresholds, levels)``."""
        return self.alpha, self.beta, self.thresholds, self.levels


@dataclasses.dataclass(frozen=True)
class Int8Range:
    """An 8-bit min/max quantizer: the range ``[lo, hi]`` (numbers, or one per output channel
    for a kernel) and, for a kernel, ``kernel``: the kernel as the Keras model quantized it."""

    lo: object
    hi: object
    kernel: np.ndarray = None


@dataclasses.dataclass
class LayerDescription:
    """One layer: see the module docstring. ``quantized``: tf_qnets wrapped it (it carries a
    quantizer); ``input_shape``: the shape of its input, batch axis ``None`` (a list of
    shapes for a layer with several inputs)."""

    name: str
    class_name: str
    config: dict
    weights: dict
    input_shape: tuple
    weight_quantizer: object = None
    output_quantizer: object = None
    quantized: bool = False

    @property
    def activation(self):
        """The name of the layer's activation function (``None`` when it has none)."""
        return self.config.get("activation")


@dataclasses.dataclass
class NodeDescription:
    """One call of a layer: the ids of the tensors it reads and writes. ``inputs_as_list``:
    the layer takes its inputs as one list (``Add``, ``Concatenate``, ...)."""

    layer: LayerDescription
    flat_input_ids: list
    flat_output_ids: list
    inputs_as_list: bool = False


class NetworkDescription:
    """A whole network: input tensor ids and shapes, the nodes in execution order, the
    output tensor ids. ``framework`` says which Keras described it (for messages);
    ``input_names`` are the model's input names (the ids when not given);
    ``input_ranges`` one int8 range ``(lo, hi)`` per input that the model's own input
    quantizer fixes, or None (export calibrates it)."""

    def __init__(self, input_ids, input_shapes, nodes, output_ids, name="model",
                 framework="keras", input_names=None, input_ranges=None):
        self.input_ids = list(input_ids)
        self.input_ranges = list(input_ranges or [None] * len(self.input_ids))
        self.input_names = list(input_names or self.input_ids)
        self.input_shapes = [tuple(shape) for shape in input_shapes]
        self.nodes = list(nodes)
        self.output_ids = list(output_ids)
        self.name = name
        self.framework = framework
        self.node_by_name = {node.layer.name: node for node in self.nodes}


_MAX_POOLS = ("MaxPooling1D", "MaxPooling2D", "MaxPooling3D")


def staircases_before_max_pools(nodes, output_ids=()):
    """``nodes`` with each max pooling's staircase put back on the layer before it.

    ``quantize_model`` quantizes a ReLU read only by a max pooling after the pooling
    (``maxpool(Q(x)) = Q(maxpool(x))``: :func:`tf_qnets.core.plan.plan_layers`); the integer
    file computes the staircase where it computed it before, inside the op that computes the
    ReLU (aligned to a kernel layer's requantization), and pools its int8 codes. So a
    described pooling whose staircase reads the only output of a layer without an output
    quantizer hands the staircase to that layer. Returns a new list (the node objects of the
    two layers replaced)."""
    nodes = list(nodes)
    producer = {tensor_id: index for index, node in enumerate(nodes)
                for tensor_id in node.flat_output_ids}
    reads = {}
    for node in nodes:
        for tensor_id in node.flat_input_ids:
            reads[tensor_id] = reads.get(tensor_id, 0) + 1
    for index, node in enumerate(nodes):
        pool = node.layer
        if (pool.class_name not in _MAX_POOLS or not isinstance(pool.output_quantizer, Staircase)
                or len(node.flat_input_ids) != 1):
            continue
        tensor_id = node.flat_input_ids[0]
        before = producer.get(tensor_id)
        if (before is None or reads.get(tensor_id) != 1 or tensor_id in output_ids
                or nodes[before].layer.output_quantizer is not None
                or len(nodes[before].flat_output_ids) != 1):
            continue
        nodes[before] = dataclasses.replace(nodes[before], layer=dataclasses.replace(
            nodes[before].layer, output_quantizer=pool.output_quantizer, quantized=True))
        nodes[index] = dataclasses.replace(node, layer=dataclasses.replace(
            pool, output_quantizer=None, quantized=False))
    return nodes


def portable_config(config):
    """``config`` without the keys that only matter for training (initializers, regularizers,
    constraints, dtype policies, ...): the part both Kerases read the same way."""
    return {key: value for key, value in dict(config).items()
            if key not in _TRAINING_ONLY_KEYS and not key.endswith(_TRAINING_ONLY_SUFFIXES)}


def is_linear(layer):
    """True when the described layer has no activation or a linear one."""
    return layer.activation in (None, "linear")


def channel_axis(layer):
    """The single normalised axis of a described BatchNormalization as a negative index counted
    from the last axis of its input (``-1``: channels last), or None when it normalises several."""
    axis = layer.config.get("axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return None
        axis = axis[0]
    rank = len(layer.input_shape)
    return int(axis) - rank if int(axis) >= 0 else int(axis)


def relu_cap(layer):
    """``(True, cap)`` for a described ``ReLU`` layer without slope or threshold (``cap``: its
    ``max_value`` or None) or ``Activation("relu"/"relu6")``; ``(False, None)`` otherwise."""
    if layer.class_name == "ReLU":
        config = layer.config
        if config.get("negative_slope") or config.get("threshold"):
            return False, None
        cap = config.get("max_value")
        return True, (None if cap is None else float(cap))
    if layer.class_name == "Activation" and layer.activation in ("relu", "relu6"):
        return True, (6.0 if layer.activation == "relu6" else None)
    return False, None

"""The export graph: the trained hard model rewritten for an exact integer TFLite conversion.

Walks the Keras graph of a :func:`tf_qnets.quantize_model` result node by node and
emits TensorFlow ops in which every tensor carries a fake-quantization range:

* kernel layers: BatchNormalization folded into the kernel when it directly follows
  a linear kernel layer; the kernel pinned by :mod:`tf_qnets.export.weights` so that
  TFLite stores exactly the trained codes (low-bit layers), the trained int8 codes
  (``first_last="int8"`` layers), or ordinary per-channel int8 (layers Keras kept float);
* low-bit activation quantizers: :func:`tf_qnets.export.activations.lower_staircase`; when
  the staircase reads a kernel layer (through a folded BN and a ReLU/ReLU6), the kernel
  layer's per-channel integer bias and weight scale are aligned so that its one int8
  requantization gives every Keras code (:mod:`tf_qnets.export.alignment`; int8 weight
  codes ``k * level`` where INT4 codes leave too coarse a lattice). A non-uniform staircase
  (any staircase with ``exact_uniform``, and a uniform one on a first layer that no
  alignment fits) uses ``lower_staircase_direct``: the kernel layer emitted once per
  threshold with the threshold as an exact integer number of accumulator units in its bias;
* ``DepthwiseConv2D``: pinned as a ``(kh, kw, 1, channels)`` kernel with one scale per output
  channel (so a following BN folds), reshaped back when emitted;
* ``GlobalAveragePooling2D`` read only by a Dense layer: one VALID convolution with the
  Dense kernel tiled over the map (same codes), so the mean is never rounded to int8, while
  the tiled kernel stays small (:data:`MAX_TILED_POOLING_WEIGHTS`);
* int8 output quantizers (tfmot): their trained FakeQuant range;
* every other tensor (the model input, unfolded BN, Add, average pooling, float outputs):
  a range calibrated on the representative data (min/max over it).

Layers that only move values (Flatten, Reshape, Dropout, max pooling, ...) keep their
input's range. Build with :func:`build_export_function`.
"""

import dataclasses

import numpy as np

from tf_qnets._keras import keras, tf
from tf_qnets.configs import KERNEL_ATTRIBUTES
from tf_qnets.export.activations import (
    code_multiplier,
    fake_quant,
    is_uniform_staircase,
    lower_staircase,
    lower_staircase_direct,
)
from tf_qnets.export.activations import decision_step as default_decision_step
from tf_qnets.export.alignment import align_channels, channel_lattice
from tf_qnets.export.weights import (
    bn_fold_factors,
    pin_float_kernel,
    pin_int8_kernel,
    pin_qnets_kernel,
)
from tf_qnets.int8 import Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.propagation import count_readers, ordered_nodes
from tf_qnets.quantizer import QNetsQuantizer
from tf_qnets.wrapper import QNetsWrapper

__all__ = ["ExportGraph", "build_export_function", "concrete_function", "staircase_scope"]

PASS_THROUGH = ("Flatten", "Reshape", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
                "GaussianDropout", "GaussianNoise", "AlphaDropout", "MaxPooling1D", "MaxPooling2D",
                "GlobalMaxPooling1D", "GlobalMaxPooling2D", "Permute", "Cropping1D", "Cropping2D",
                "ZeroPadding1D", "ZeroPadding2D", "ActivityRegularization",
                # TFLite's int8 average pooling keeps its input's scale (same-scale constraint)
                "AveragePooling1D", "AveragePooling2D")
_RANGE_MARGIN = 1e-6
# Ops between a fake-quantization and a kernel layer that keep the int8 scale.
_SCALE_KEEPING_OPS = ("MaxPool", "Reshape", "Identity", "Squeeze", "ExpandDims", "Transpose")
# ... and keep every int8 value (zero padding pads with the zero point: the value 0).
_LATTICE_KEEPING_OPS = _SCALE_KEEPING_OPS + ("Pad", "PadV2")
# A global average pooling is folded into the Dense layer after it (its kernel tiled over the
# map) only while the tiled kernel stays this small: a 7x7 map before a 1280x1000 classifier
# would store 63M weights.
MAX_TILED_POOLING_WEIGHTS = 1 << 20
# A first layer (reading the model input) whose staircase no alignment fits is emitted once per
# threshold up to this many thresholds (3-bit activations): 7 copies of a small layer. At 4 bits
# (15 copies) the copies cost more file and time than the rare flipped code: aligned where
# possible instead.
MAX_FIRST_LAYER_COPIES = 7
# Kernel layers whose last kernel axis is the output channel (aligned per channel).
_ALIGNABLE = ("Conv1D", "Conv2D", "Dense", "DepthwiseConv2D")


def staircase_scope(layer_name):
    """Name scope of a lowered staircase; its TFLite tensor names contain ``scope + "/"``."""
    return f"{layer_name}_qnets_staircase"


def _inner(layer):
    return layer.layer if isinstance(layer, QNetsWrapper) else layer


def _class(layer):
    return type(_inner(layer)).__name__


def _consumers(model):
    """Tensor id -> number of nodes (plus model outputs) reading it."""
    return count_readers(model, ordered_nodes(model))


def _is_linear(layer):
    activation = getattr(_inner(layer), "activation", None)
    return activation is None or activation is keras.activations.linear or getattr(
        activation, "__name__", "") == "linear"


def _is_plain_relu(layer):
    """A ``ReLU()`` layer (no slope, cap or threshold) or ``Activation("relu")``."""
    return _relu_cap(layer) == (True, None)


def _relu_cap(layer):
    """``(True, cap)`` for a ``ReLU`` layer without slope or threshold (``cap``: its
    ``max_value`` or None) or ``Activation("relu"/"relu6")``; ``(False, None)`` otherwise."""
    inner = _inner(layer)
    if type(inner).__name__ == "ReLU":
        if getattr(inner, "negative_slope", 0) or getattr(inner, "threshold", 0):
            return False, None
        cap = getattr(inner, "max_value", None)
        return True, (None if cap is None else float(cap))
    if type(inner).__name__ == "Activation":
        name = getattr(inner.activation, "__name__", "")
        if name in ("relu", "relu6"):
            return True, (6.0 if name == "relu6" else None)
    return False, None


def _affine_factors(layer):
    """``(scale, offset)`` arrays with ``layer(x) = x * scale + offset`` (inference), or None."""
    cls = type(layer).__name__
    if isinstance(layer, keras.layers.BatchNormalization):   # FrozenStatistics... included
        axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
        rank = len(layer.input_shape)
        if len(np.atleast_1d(layer.axis)) != 1 or axis not in (-1, rank - 1):
            return None
        channels = int(layer.input_shape[-1])
        g, shift = bn_fold_factors(layer, channels)
        return g.astype(np.float32), shift.astype(np.float32)
    if cls == "Rescaling":
        return (np.asarray(layer.scale, np.float32), np.asarray(layer.offset, np.float32))
    if cls == "Normalization":
        if getattr(layer, "invert", False):
            return None
        mean = np.asarray(layer.mean, np.float64)
        std = np.maximum(np.sqrt(np.asarray(layer.variance, np.float64)), keras.backend.epsilon())
        return ((1.0 / std).astype(np.float32), (-mean / std).astype(np.float32))
    return None


class _Pooled:
    """A global average pooling left to the Dense layer after it (see ``_pooled_dense``)."""

    def __init__(self, inputs):
        self.inputs = inputs


class _Deferred:
    """A kernel layer's output not emitted yet: its staircase builds per-threshold copies."""

    def __init__(self, layer, inputs):
        self.layer = layer
        self.inputs = inputs


def _finer_codes(pinned):
    """``pinned`` stored in int8 as ``k * code`` (``k = 127 // max |code|``): the same real
    kernel, a ``k`` times finer weight scale."""
    top = max(1, int(np.max(np.abs(pinned.levels))))
    k = 127 // top
    q_max = 2 ** (pinned.num_bits - 1) - 1
    factor = 127.0 / (k * q_max)   # new range +-127 steps of (old step / k)
    return dataclasses.replace(
        pinned, range_min=(np.asarray(pinned.range_min, np.float64) * factor).astype(np.float32),
        range_max=(np.asarray(pinned.range_max, np.float64) * factor).astype(np.float32),
        num_bits=8)


def _weight_steps(pinned):
    """Per-output-channel weight scale of a pinned (symmetric, narrow-range) kernel."""
    q_max = 2 ** (pinned.num_bits - 1) - 1
    span = np.asarray(pinned.range_max, np.float64) - np.asarray(pinned.range_min, np.float64)
    return np.broadcast_to(span / (2.0 * q_max), np.shape(pinned.bias))


def _quantizers(layer):
    """``(weight quantizer, its variables, output quantizer, its variables)`` of one layer."""
    if not isinstance(layer, QNetsWrapper):
        return None, None, None, None
    weight_q = weight_v = output_q = output_v = None
    for role, _, quantizer, variables in layer.quantizer_states():
        if role == "weights":
            weight_q, weight_v = quantizer, variables
        else:
            output_q, output_v = quantizer, variables
    return weight_q, weight_v, output_q, output_v


class ExportGraph:
    """The rewritten model: call :meth:`forward` eagerly to calibrate, then trace it to convert."""

    def __init__(self, model, int4_weights="auto", exact_uniform=False):
        self.model = model
        self.exact_uniform = exact_uniform
        self.int4_weights = int4_weights
        self.nodes = ordered_nodes(model)
        self.ranges = None
        self._observed = {}
        self.pinned = {}        # layer name -> PinnedKernel
        self.folded_bn = set()  # names of BN layers folded into the kernel before them
        self._clones = {}
        self.outputs = {}       # layer name -> ("staircase" | "int8", parameters)
        self.skip_calibration = set()
        self.activations = {}   # kernel layer name -> its activation function
        self.quantize = True    # False: the same network in float (for the size comparison)
        self.direct = {}        # staircase layer name -> (kernel layer name, relu before it)
        self.deferred = set()   # kernel layers emitted only inside a direct staircase
        self.folded_pooling = set()  # global average poolings computed by the Dense after them
        self.aligned = {}       # kernel layer name -> (uniform staircase layer it feeds, relu)
        self.affine = {}        # unfolded BN / Rescaling / Normalization name -> (scale, offset)
        self.alignments = {}    # kernel layer name -> ChannelAlignment (set while tracing)
        self._code_multipliers = {}  # graph tensor name -> code multiplier of a staircase output
        self._model_input_names = set()  # graph tensor names of the (fake-quantized) model input
        self._depthwise_shapes = {}  # depthwise layer name -> its (kh, kw, in, multiplier) shape
        self._producer = {}
        self._plan()

    # ----------------------------------------------------------------- planning
    def _plan(self):
        consumers = _consumers(self.model)
        producer = self._producer
        for node in self.nodes:
            for tensor_id in node.flat_output_ids:
                producer[tensor_id] = node
        folds = {}
        for node in self.nodes:
            if (not isinstance(node.layer, keras.layers.BatchNormalization)
                    or len(node.flat_input_ids) != 1):
                continue
            source = producer.get(node.flat_input_ids[0])
            if source is None or _class(source.layer) not in KERNEL_ATTRIBUTES:
                continue
            if not _is_linear(source.layer):
                continue
            if _quantizers(source.layer)[2] is not None or consumers[node.flat_input_ids[0]] != 1:
                continue
            axis = node.layer.axis
            axis = axis[0] if isinstance(axis, (list, tuple)) else axis
            if axis not in (-1, len(node.layer.input_shape) - 1):
                continue
            folds[source.layer.name] = node.layer
            self.folded_bn.add(node.layer.name)
        readers = {}
        for node in self.nodes:
            for tensor_id in node.flat_input_ids:
                readers.setdefault(tensor_id, []).append(node)
        for node in self.nodes:
            if _class(node.layer) in KERNEL_ATTRIBUTES and self._feeds_only_fused_quantizers(
                    node, readers, consumers):
                self.skip_calibration.add(node.layer.name)
        for node in self.nodes:
            if _class(node.layer) in KERNEL_ATTRIBUTES:
                self._pin(node.layer, folds.get(node.layer.name))
            _, _, output_q, output_v = _quantizers(node.layer)
            if isinstance(output_q, QNetsQuantizer):
                self.outputs[node.layer.name] = ("staircase", (
                    float(output_v["alpha"].numpy()), float(output_v["beta"].numpy()),
                    output_v["thresholds"].numpy(), output_q.levels))
            elif isinstance(output_q, Int8OutputQuantizer) or output_q is not None:
                self.outputs[node.layer.name] = ("int8", (
                    float(output_v["min_var"].numpy()), float(output_v["max_var"].numpy())))
        self._plan_direct(readers, consumers)
        self._plan_pooling(readers, consumers)
        for node in self.nodes:
            if node.layer.name not in self.folded_bn and not isinstance(node.layer, QNetsWrapper):
                factors = _affine_factors(node.layer)
                if factors is not None:
                    self.affine[node.layer.name] = factors

    def _plan_pooling(self, readers, consumers):
        """Global average poolings read only by a Dense layer: folded into it (while the tiled
        kernel has at most MAX_TILED_POOLING_WEIGHTS weights)."""
        for node in self.nodes:
            inner = _inner(node.layer)
            if (type(inner).__name__ != "GlobalAveragePooling2D" or getattr(inner, "keepdims", False)
                    or inner.data_format != "channels_last" or node.layer.name in self.outputs):
                continue
            shape = node.layer.input_shape
            if len(shape) != 4 or shape[1] is None or shape[2] is None:
                continue
            tensor_id = node.flat_output_ids[0]
            users = readers.get(tensor_id, [])
            if len(users) != 1 or consumers.get(tensor_id, 0) != 1:
                continue
            user = users[0].layer
            tiled = int(shape[1]) * int(shape[2]) * int(np.prod(self.pinned[user.name].kernel.shape)) if (
                user.name in self.pinned) else None
            if _class(user) == "Dense" and len(users[0].flat_input_ids) == 1 and (
                    user.name not in self.deferred and user.name not in self.direct) and (
                    tiled is not None and tiled <= MAX_TILED_POOLING_WEIGHTS):
                self.folded_pooling.add(node.layer.name)

    def _staircase_source(self, node, consumers):
        """``(kernel layer name, relu before the staircase)`` when the staircase of ``node`` is
        computed from a kernel layer's accumulator, else ``None``.

        That holds when the staircase sits on a kernel layer with a linear or ReLU activation
        (case a), or on a plain ReLU reading only a kernel layer with a linear activation,
        possibly through a folded BatchNormalization (case b).
        """
        activation = getattr(_inner(node.layer), "activation", None)
        if _class(node.layer) in KERNEL_ATTRIBUTES:
            if _is_linear(node.layer):
                return node.layer.name, False
            if getattr(activation, "__name__", "") == "relu":
                return node.layer.name, True
            return None
        is_relu, cap = _relu_cap(node.layer)
        if not is_relu or len(node.flat_input_ids) != 1:
            return None
        if cap is not None:
            # A capped ReLU (ReLU6) changes no code when the staircase's last threshold lies
            # below the cap: everything the cap clips is at the top level either way.
            _, beta, thresholds, _ = self.outputs[node.layer.name][1]
            if not np.max(np.asarray(thresholds, np.float64)) / beta < cap * (1 - 1e-6):
                return None
        source = self._producer.get(node.flat_input_ids[0])
        if source is not None and source.layer.name in self.folded_bn:
            if consumers.get(source.flat_input_ids[0], 0) != 1:
                return None
            source = self._producer.get(source.flat_input_ids[0])
        if (source is None or _class(source.layer) not in KERNEL_ATTRIBUTES
                or not _is_linear(source.layer) or source.layer.name in self.outputs
                or consumers.get(source.flat_output_ids[0], 0) != 1
                or consumers.get(node.flat_input_ids[0], 0) != 1):
            return None
        return source.layer.name, True

    def _plan_direct(self, readers, consumers):
        """Staircases computed straight from their kernel layer's accumulator.

        Non-uniform ones (and uniform ones with ``exact_uniform``) go to ``direct``: the
        kernel layer is emitted once per threshold with the threshold subtracted in the
        bias, so each decision is taken on the int32 accumulator (``lower_staircase_direct``).
        Uniform ones go to ``aligned``: one kernel layer whose per-channel bias and weight
        scale are chosen so that its single requantization gives the Keras codes
        (:mod:`tf_qnets.export.alignment`).
        """
        for node in self.nodes:
            kind, values = self.outputs.get(node.layer.name, (None, None))
            if kind != "staircase":
                continue
            found = self._staircase_source(node, consumers)
            if found is None:
                continue
            kernel_name, relu = found
            if is_uniform_staircase(values[2], values[3]) and not self.exact_uniform:
                self.aligned[kernel_name] = (node.layer.name, relu)
                continue
            self.direct[node.layer.name] = (kernel_name, relu)
            if kernel_name != node.layer.name:
                self.deferred.add(kernel_name)

    def _feeds_only_fused_quantizers(self, node, readers, consumers):
        """True when every reader of a kernel layer's output (looking through a folded BN) is a
        ReLU whose output quantizer fixes the range: TFLite fuses that ReLU into the kernel op,
        so a calibrated range in between would only add a rounding."""
        tensor_id = node.flat_output_ids[0]
        next_nodes = readers.get(tensor_id, [])
        if len(next_nodes) == 1 and next_nodes[0].layer.name in self.folded_bn:
            tensor_id = next_nodes[0].flat_output_ids[0]
            next_nodes = readers.get(tensor_id, [])
        if not next_nodes or len(next_nodes) != consumers.get(tensor_id, 0):
            return False
        for reader in next_nodes:
            if not _is_plain_relu(reader.layer) or _quantizers(reader.layer)[2] is None:
                return False
        return True

    def _pin(self, layer, bn):
        inner = _inner(layer)
        attr = KERNEL_ATTRIBUTES[type(inner).__name__]
        weight_q, weight_v, _, _ = _quantizers(layer)
        kernel_var = getattr(inner, attr)
        if isinstance(layer, QNetsWrapper) and getattr(layer, "_weight_vars", None):
            # tfmot's call leaves the quantized tensor in the attribute; use the variable.
            kernel_var = layer._weight_vars[0][0]
        kernel = kernel_var.numpy()
        bias = inner.bias.numpy() if getattr(inner, "use_bias", False) else None
        if type(inner).__name__ == "DepthwiseConv2D":
            # Output channel c = input channel * multiplier + m: pinned as a (kh, kw, 1, C)
            # kernel so that per-channel scales (and a folded BN) follow the output channels;
            # reshaped back to (kh, kw, in, multiplier) when emitted.
            self._depthwise_shapes[layer.name] = kernel.shape
            kernel = kernel.reshape(kernel.shape[0], kernel.shape[1], 1, -1)
        fold = bn_fold_factors(bn, kernel.shape[-1]) if bn is not None else None
        if isinstance(weight_q, QNetsQuantizer):
            # INT4 depthwise kernels need DEPTHWISE_CONV_2D version 7, which TFLite's reference
            # kernels and tflite-runtime 2.14 lack; depthwise kernels are small: int8.
            int4 = False if type(inner).__name__ == "DepthwiseConv2D" else self.int4_weights
            pinned = pin_qnets_kernel(
                kernel, bias, weight_v["alpha"].numpy(), weight_v["beta"].numpy(),
                weight_v["thresholds"].numpy(), weight_q.levels, fold, int4)
        elif isinstance(weight_q, Int8WeightQuantizer) or weight_q is not None:
            quantized = weight_q(kernel_var, training=False, weights=weight_v).numpy()
            quantized = quantized.reshape(kernel.shape)
            pinned = pin_int8_kernel(quantized, bias, weight_v["min_var"].numpy(),
                                     weight_v["max_var"].numpy(), fold)
        else:
            pinned = pin_float_kernel(kernel, bias, fold)
        self.pinned[layer.name] = pinned
        config = inner.get_config()
        config["use_bias"] = True
        clone = type(inner).from_config(config)
        clone.build(layer.input_shape)
        self.activations[layer.name] = clone.activation
        clone.activation = keras.activations.linear
        self._clones[layer.name] = (clone, attr)

    # ----------------------------------------------------------------- ranges
    def _calibrated(self, key, x):
        """Record min/max of ``x`` (calibration) or fake-quantize it with the recorded range."""
        if not self.quantize:
            return x
        if self.ranges is None:
            value = np.asarray(x)
            lo = min(float(np.min(value)), 0.0)
            hi = max(float(np.max(value)), 0.0)
            old = self._observed.get(key)
            self._observed[key] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
            return x
        lo, hi = self.ranges[key]
        if hi - lo < _RANGE_MARGIN:
            hi = lo + _RANGE_MARGIN
        return fake_quant(x, lo, hi)

    def calibrate(self, batches):
        """Run the float export graph on ``batches`` and fix every calibrated range."""
        self.ranges = None
        self._observed = {}
        for batch in batches:
            self.forward(tf.convert_to_tensor(np.asarray(batch, np.float32)))
        self.ranges = dict(self._observed)

    # ----------------------------------------------------------------- forward
    def _kernel_layer(self, layer, x, bias_shift=0.0, gain=1.0, bias_override=None):
        """The pinned kernel layer without its activation, computing ``gain * (z - bias_shift)``
        (``gain`` a number or one factor per output channel; ``bias_override``: the bias to use).

        A per-threshold copy (see ``lower_staircase_direct``) subtracts the threshold in the
        bias; a distinct ``gain`` per copy (kernel, its quantization range and bias all scaled,
        so the stored codes do not change) keeps the converter from merging the copies into
        one float convolution followed by float bias additions.
        """
        pinned = self.pinned[layer.name]
        bias = ((np.asarray(pinned.bias, np.float64) - bias_shift) * gain).astype(np.float32)
        if bias_override is not None:
            bias = np.asarray(bias_override, np.float32)
        clone, attr = self._clones[layer.name]
        lo = (np.asarray(pinned.range_min, np.float64) * gain).astype(np.float32)
        hi = (np.asarray(pinned.range_max, np.float64) * gain).astype(np.float32)
        kernel_values = (np.asarray(pinned.kernel, np.float64) * gain).astype(np.float32)
        per_channel = np.ndim(lo) > 0 and not (np.all(lo == lo.flat[0]) and np.all(hi == hi.flat[0]))
        if not per_channel:
            lo, hi = float(np.min(lo)), float(np.max(hi))
        kernel = tf.constant(kernel_values)
        shape = self._depthwise_shapes.get(layer.name)
        if not self.quantize:
            setattr(clone, attr, kernel if shape is None else tf.reshape(kernel, shape))
            clone.bias = tf.constant(bias)
            return clone.call(x)
        name = f"{layer.name}/pinned_kernel"
        if _class(layer) == "Dense" and per_channel and len(x.shape) == 2:
            # TFLite stores FULLY_CONNECTED weights transposed, which a per-channel range on the
            # last axis cannot follow; a 1x1 CONV_2D keeps per-channel int8 weights exact.
            kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                tf.constant(kernel_values[None, None]), lo, hi, num_bits=pinned.num_bits,
                narrow_range=True, name=name)
            y = tf.nn.conv2d(tf.reshape(x, [-1, 1, 1, x.shape[-1]]), kernel, strides=1,
                             padding="VALID")
            y = tf.nn.bias_add(y, tf.constant(bias))
            return tf.reshape(y, [-1, pinned.kernel.shape[-1]])
        if _class(layer) == "Conv1D":
            return self._conv1d_as_conv2d(clone, kernel_values, bias, x, lo, hi, per_channel, name,
                                          pinned.num_bits)
        if per_channel:
            kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                kernel, lo, hi, num_bits=pinned.num_bits, narrow_range=True, name=name)
        else:
            kernel = tf.quantization.fake_quant_with_min_max_vars(
                kernel, lo, hi, num_bits=pinned.num_bits, narrow_range=True, name=name)
        setattr(clone, attr, kernel if shape is None else tf.reshape(kernel, shape))
        clone.bias = tf.constant(bias)
        return clone.call(x)

    @staticmethod
    def _conv1d_as_conv2d(clone, kernel_values, bias, x, lo, hi, per_channel, name, num_bits):
        """Conv1D written as a height-1 Conv2D: the converter's own Conv1D lowering reshapes a
        per-channel quantized kernel and loses its channel axis."""
        if clone.padding == "causal" or clone.groups != 1 or clone.data_format != "channels_last":
            raise ValueError(
                f"Layer {clone.name!r}: export supports Conv1D with padding 'same'/'valid', "
                "groups=1 and channels_last.")
        kernel = tf.constant(kernel_values[None])
        if per_channel:
            kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                kernel, lo, hi, num_bits=num_bits, narrow_range=True, name=name)
        else:
            kernel = tf.quantization.fake_quant_with_min_max_vars(
                kernel, lo, hi, num_bits=num_bits, narrow_range=True, name=name)
        y = tf.nn.conv2d(tf.expand_dims(x, 1), kernel, strides=[1, 1, clone.strides[0], 1],
                         padding=clone.padding.upper(),
                         dilations=[1, 1, clone.dilation_rate[0], 1])
        y = tf.nn.bias_add(y, tf.constant(bias))
        return tf.squeeze(y, 1)

    def _activation(self, layer, x):
        """The kernel layer's activation; ranges before anything TFLite cannot fuse (softmax, ...).

        A ReLU before a staircase whose levels start at 0 or above is left out: the lowered
        staircase clamps below its first level anyway (and the converter mis-handles the pair).
        """
        activation = self.activations[layer.name]
        name = getattr(activation, "__name__", "")
        kind, values = self.outputs.get(layer.name, (None, None))
        if name == "relu" and kind == "staircase" and values[3].levels[0] >= 0:
            return x
        if name in ("linear", "relu", "relu6"):
            return activation(x)
        return activation(self._calibrated(f"{layer.name}/preactivation", x))

    def _output(self, layer, x):
        if not self.quantize:
            return x
        kind, values = self.outputs.get(layer.name, (None, None))
        if kind == "staircase":
            with tf.name_scope(staircase_scope(layer.name)):
                y = lower_staircase(x, *values, name=layer.name)
            return self._staircase_output(y, values[3])
        if kind == "int8":
            return fake_quant(x, *values)
        if layer.name in self.skip_calibration:
            return x
        return self._calibrated(layer.name, x)

    def _pooled_dense(self, layer, x):
        """``Dense(GlobalAveragePooling2D(x))`` as one VALID convolution over the whole map.

        The kernel ``W / (H W)`` is tiled over the ``H x W`` positions with its quantization
        range divided by ``H W`` too, so the stored codes are the Dense layer's own codes and
        the int32 accumulator holds the exact sum: no int8 rounding of the mean.
        """
        pinned = self.pinned[layer.name]
        height, width = int(x.shape[1]), int(x.shape[2])
        area = float(height * width)
        kernel = np.tile(np.asarray(pinned.kernel, np.float64)[None, None] / area,
                         [height, width, 1, 1]).astype(np.float32)
        lo = (np.asarray(pinned.range_min, np.float64) / area).astype(np.float32)
        hi = (np.asarray(pinned.range_max, np.float64) / area).astype(np.float32)
        kernel = tf.constant(kernel)
        if self.quantize:
            name = f"{layer.name}/pinned_kernel"
            if np.ndim(lo) > 0:
                kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                    kernel, lo, hi, num_bits=pinned.num_bits, narrow_range=True, name=name)
            else:
                kernel = tf.quantization.fake_quant_with_min_max_vars(
                    kernel, lo, hi, num_bits=pinned.num_bits, narrow_range=True, name=name)
        y = tf.nn.conv2d(x, kernel, strides=1, padding="VALID")
        y = tf.nn.bias_add(y, tf.constant(pinned.bias))
        return tf.reshape(y, [-1, kernel.shape[-1]])

    def _accumulator_units(self, kernel_layer, inputs, keeping_ops=_SCALE_KEEPING_OPS):
        """Per-channel value ``S_c`` of one int32 accumulator unit (input scale times weight
        scale) as the converter will set it, or ``None`` when the input's scale is unknown
        (eager calibration, or an input not produced by a fake-quantization)."""
        input_scale = self._input_scale(inputs, keeping_ops)
        if input_scale is None:
            return None
        return input_scale * _weight_steps(self.pinned[kernel_layer.name])

    def staircase_lowerings(self):
        """How each activation staircase was lowered, after tracing: ``{"aligned", "copies",
        "partial", "rounded": [staircase layer names]}``. ``partial``: aligned except for some
        output channels (INT4 weights leave no solution there; ``int4_weights=False`` gives
        them one); ``rounded``: it reads an int8 tensor that a calibrated range rounded, so
        its codes can differ from Keras'."""
        plans = {self.aligned[name][0]: plan for name, plan in self.alignments.items()
                 if self.aligned[name][0] not in self.direct}
        aligned = {name for name, plan in plans.items() if np.all(plan.exact)}
        partial = {name for name, plan in plans.items() if np.any(plan.exact) and name not in aligned}
        copies = set(self.direct)
        names = [name for name, (kind, _) in self.outputs.items() if kind == "staircase"]
        return {"aligned": [n for n in names if n in aligned],
                "copies": [n for n in names if n in copies],
                "partial": [n for n in names if n in partial],
                "rounded": [n for n in names
                            if n not in aligned and n not in copies and n not in partial]}

    def _affine(self, layer, x):
        """``x * scale + offset`` (an unfolded BatchNormalization, Rescaling, Normalization) with
        a calibrated range on the product too: TFLite has no int8 op for the pair, and a
        tensor without a range would stay float."""
        scale, offset = self.affine[layer.name]
        y = self._calibrated(f"{layer.name}/scaled", x * tf.constant(scale, x.dtype))
        return y + tf.constant(offset, x.dtype)

    @staticmethod
    def _source(inputs, keeping_ops=_LATTICE_KEEPING_OPS):
        """The tensor ``inputs`` copies its int8 values from (through ``keeping_ops``)."""
        tensor = inputs
        while getattr(tensor, "op", None) is not None and tensor.op.type in keeping_ops:
            tensor = tensor.op.inputs[0]
        return tensor

    def _source_tensor(self, inputs):
        """Name of the tensor ``inputs`` copies int8 values from (through pooling, padding, ...)."""
        return getattr(self._source(inputs), "name", None)

    def _input_code_multiplier(self, inputs):
        """``m`` when ``inputs`` is a lowered staircase's output (level ``y`` stored as ``m y``),
        possibly through ops that keep the int8 values; 1 for any other int8 tensor."""
        return self._code_multipliers.get(self._source_tensor(inputs), 1)

    def _aligned_kernel_layer(self, layer, inputs):
        """A kernel layer; when it feeds a uniform staircase (``aligned``), with per-channel
        weight scales and integer biases that make TFLite's requantization reproduce every
        Keras code (:func:`tf_qnets.export.alignment.align_channels`).

        The accumulator lattice grows with the stored weight codes: when the trained codes
        leave some channel without a solution and the weights are stored in int8 anyway
        (``int4_weights=False``, or levels beyond -7..7), the codes are stored as
        ``k * level`` (``k = 127 // max level``; the same weights, a ``k`` times finer
        accumulator) and the search is repeated. INT4 storage is kept: its unsolved channels
        keep the plain rounded bias. When the layer reads the model input (a first layer)
        and some channel is unsolved, the staircase is computed from per-threshold copies
        (``direct``): returns a ``_Deferred``.
        """
        staircase, relu = self.aligned.get(layer.name, (None, False))
        if (staircase is None or not self.quantize or self.ranges is None
                or _class(layer) not in _ALIGNABLE):
            return self._kernel_layer(layer, inputs)
        pinned = self.pinned[layer.name]
        plan = self._alignment(layer, inputs, pinned, staircase)
        if plan is None:
            return self._kernel_layer(layer, inputs)
        if not np.all(plan.exact) and pinned.levels is not None and pinned.num_bits == 8:
            # int8 storage already: storing k * level instead of level costs nothing
            finer = _finer_codes(pinned)
            finer_plan = self._alignment(layer, inputs, finer, staircase)
            if finer_plan is not None and np.all(finer_plan.exact):
                self.pinned[layer.name], plan = finer, finer_plan
        self.alignments[layer.name] = plan
        if np.all(plan.exact):
            return self._kernel_layer(layer, inputs, gain=plan.gain, bias_override=plan.bias)
        thresholds = self.outputs[staircase][1][2]
        if (self._source_tensor(inputs) in self._model_input_names
                and len(thresholds) <= MAX_FIRST_LAYER_COPIES):
            # The model input is exact on its int8 grid (8-bit images): keep it exact with
            # per-threshold copies (a first layer is small). Any other int8 tensor here was
            # rounded by a calibrated range already, so copies could not make it exact.
            self.direct[staircase] = (layer.name, relu)
            return _Deferred(layer, inputs)
        # Exact channels aligned, the others with the plain rounded bias (gain 1).
        return self._kernel_layer(layer, inputs, gain=plan.gain, bias_override=plan.bias)

    def _alignment(self, layer, inputs, pinned, staircase):
        """:func:`align_channels` for ``layer`` stored as ``pinned``; None if scales are unknown."""
        input_scale = self._input_scale(inputs)
        if input_scale is None:
            return None
        step = _weight_steps(pinned)
        codes = np.round(np.asarray(pinned.kernel, np.float64) / np.where(step > 0, step, 1.0))
        lattice = channel_lattice(codes, self._input_code_multiplier(inputs))
        _, beta, thresholds, levels = self.outputs[staircase][1]
        return align_channels(input_scale * step, pinned.bias, lattice, beta, thresholds, levels)

    def _input_scale(self, inputs, keeping_ops=_LATTICE_KEEPING_OPS):
        """The int8 scale of ``inputs`` (its fake-quantization, looking through ``keeping_ops``),
        or None when unknown (eager calibration, or no fake-quantization)."""
        op = getattr(self._source(inputs, keeping_ops), "op", None)
        if op is None or op.type != "FakeQuantWithMinMaxArgs" or op.get_attr("num_bits") != 8:
            return None
        return (float(op.get_attr("max")) - float(op.get_attr("min"))) / 255.0

    def _direct_staircase(self, layer, kernel_layer, inputs):
        """A staircase computed from per-threshold copies of ``kernel_layer``.

        When the accumulator units ``S_c`` are known, each copy's bias is an exact integer
        number of units: with ``v_c = S_c acc + b_c`` (``acc`` the integer accumulator),
        ``v_c > t`` holds exactly when ``acc >= n_c = floor((t - b_c) / S_c) + 1``, so the
        copy computes ``S_c (acc + 1 - n_c)`` on a grid of step ``d = min_c S_c``: one or
        more steps exactly when the Keras decision is true. Otherwise the float bias
        ``b_c - t + d/2`` is used (exact up to the int32 bias rounding).
        """
        alpha, beta, thresholds, levels = self.outputs[layer.name][1]
        relu = self.direct[layer.name][1]
        units = self._accumulator_units(kernel_layer, inputs)
        bias = np.asarray(self.pinned[kernel_layer.name].bias, np.float64)
        if units is not None and np.all(units > 0):
            step = float(np.min(units))

            def copy(t, gain):
                first = np.floor((t - bias) / units) + 1.0
                return self._kernel_layer(kernel_layer, inputs, bias - units * (1.0 - first), gain)
        else:
            step = None

            def copy(t, gain):
                return self._kernel_layer(kernel_layer, inputs, t - decision_step / 2.0, gain)
        decision_step = step if step is not None else default_decision_step(
            np.asarray(thresholds, np.float64) / beta)
        with tf.name_scope(staircase_scope(layer.name)):
            y = lower_staircase_direct(copy, relu, alpha, beta, thresholds, levels,
                                       step=decision_step, name=layer.name)
        return self._staircase_output(y, levels)

    def _staircase_output(self, y, levels):
        """Remember that the traced tensor ``y`` stores level ``v`` as ``m * v`` (for alignment)."""
        if hasattr(y, "name"):
            self._code_multipliers[y.name] = code_multiplier(levels)
        return y

    def forward(self, inputs):
        """The export computation for one input batch (eager or traced)."""
        values = {}
        for tensor in self.model.inputs:
            values[str(id(tensor))] = self._calibrated("__input__", inputs)
            if hasattr(values[str(id(tensor))], "name"):
                self._model_input_names.add(values[str(id(tensor))].name)
        for node in self.nodes:
            layer = node.layer
            cls = _class(layer)
            if cls in KERNEL_ATTRIBUTES and self.quantize and layer.name in self.direct:
                out = self._direct_staircase(layer, layer, values[node.flat_input_ids[0]])
            elif cls in KERNEL_ATTRIBUTES and self.quantize and layer.name in self.deferred:
                out = _Deferred(layer, values[node.flat_input_ids[0]])
            elif layer.name in self.folded_pooling and self.quantize:
                out = _Pooled(values[node.flat_input_ids[0]])
            elif isinstance(values.get(node.flat_input_ids[0]), _Pooled):
                x = self._pooled_dense(layer, values[node.flat_input_ids[0]].inputs)
                out = self._output(layer, self._activation(layer, x))
            elif isinstance(values.get(node.flat_input_ids[0]), _Deferred):
                if layer.name in self.folded_bn:
                    out = values[node.flat_input_ids[0]]
                else:
                    deferred = values[node.flat_input_ids[0]]
                    out = self._direct_staircase(layer, deferred.layer, deferred.inputs)
            elif cls in KERNEL_ATTRIBUTES:
                x = self._aligned_kernel_layer(layer, values[node.flat_input_ids[0]])
                if isinstance(x, _Deferred) and layer.name in self.direct:
                    out = self._direct_staircase(layer, layer, x.inputs)
                elif isinstance(x, _Deferred):
                    out = x
                else:
                    out = self._output(layer, self._activation(layer, x))
            elif layer.name in self.folded_bn:
                out = values[node.flat_input_ids[0]]
            elif cls in PASS_THROUGH:
                out = _inner(layer)(values[node.flat_input_ids[0]], training=False)
            elif layer.name in self.affine:
                out = self._output(layer, self._affine(layer, values[node.flat_input_ids[0]]))
            else:
                args, kwargs = node.map_arguments({k: [v] * 64 for k, v in values.items()})
                if "training" in getattr(_inner(layer), "_call_spec").arg_names:
                    kwargs["training"] = False
                out = self._output(layer, _inner(layer)(*args, **kwargs))
            values[node.flat_output_ids[0]] = out
        outputs = [values[str(id(t))] for t in self.model.outputs]
        return outputs[0] if len(outputs) == 1 else outputs


def concrete_function(graph):
    """Trace ``graph.forward`` for a float32 batch of the model's input shape."""
    shape = [None] + list(graph.model.inputs[0].shape[1:])
    function = tf.function(graph.forward, autograph=False, input_signature=[tf.TensorSpec(shape, tf.float32)])
    return function.get_concrete_function()


def build_export_function(model, batches, int4_weights="auto"):
    """Calibrate an :class:`ExportGraph` on ``batches``; return ``(graph, concrete_function)``."""
    graph = ExportGraph(model, int4_weights=int4_weights)
    graph.calibrate(batches)
    return graph, concrete_function(graph)

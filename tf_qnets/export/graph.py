"""The export graph: the trained hard model rewritten for an exact integer TFLite conversion.

Walks the Keras graph of a :func:`tf_qnets.quantize_model` result node by node and
emits TensorFlow ops in which every tensor carries a fake-quantization range:

* kernel layers: BatchNormalization folded into the kernel when it directly follows
  a linear kernel layer; the kernel pinned by :mod:`tf_qnets.export.weights` so that
  TFLite stores exactly the trained codes (low-bit layers), the trained int8 codes
  (``first_last="int8"`` layers), or ordinary per-channel int8 (layers Keras kept float);
* low-bit activation quantizers: :func:`tf_qnets.export.activations.lower_staircase`;
* int8 output quantizers (tfmot): their trained FakeQuant range;
* every other tensor (the model input, unfolded BN, Add, average pooling, float outputs):
  a range calibrated on the representative data (min/max over it).

Layers that only move values (Flatten, Reshape, Dropout, max pooling, ...) keep their
input's range. Build with :func:`build_export_function`.
"""

import numpy as np

from tf_qnets._keras import keras, tf
from tf_qnets.configs import KERNEL_ATTRIBUTES
from tf_qnets.export.activations import fake_quant, lower_staircase
from tf_qnets.export.weights import (
    bn_fold_factors,
    pin_float_kernel,
    pin_int8_kernel,
    pin_qnets_kernel,
)
from tf_qnets.int8 import Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.quantizer import QNetsQuantizer
from tf_qnets.wrapper import QNetsWrapper

__all__ = ["ExportGraph", "build_export_function", "concrete_function"]

PASS_THROUGH = ("Flatten", "Reshape", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
                "GaussianDropout", "GaussianNoise", "AlphaDropout", "MaxPooling1D", "MaxPooling2D",
                "GlobalMaxPooling1D", "GlobalMaxPooling2D", "Permute", "Cropping1D", "Cropping2D",
                "ZeroPadding1D", "ZeroPadding2D", "ActivityRegularization")
_RANGE_MARGIN = 1e-6


def _inner(layer):
    return layer.layer if isinstance(layer, QNetsWrapper) else layer


def _class(layer):
    return type(_inner(layer)).__name__


def _consumers(model):
    """Tensor id -> number of nodes (plus model outputs) reading it."""
    counts = {}
    for depth_nodes in model._nodes_by_depth.values():
        for node in depth_nodes:
            if node.is_input:
                continue
            for tensor_id in node.flat_input_ids:
                counts[tensor_id] = counts.get(tensor_id, 0) + 1
    for tensor in model.outputs:
        counts[str(id(tensor))] = counts.get(str(id(tensor)), 0) + 1
    return counts


def _ordered_nodes(model):
    nodes = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        nodes.extend(node for node in model._nodes_by_depth[depth] if not node.is_input)
    return nodes


def _is_linear(layer):
    activation = getattr(_inner(layer), "activation", None)
    return activation is None or activation is keras.activations.linear or getattr(
        activation, "__name__", "") == "linear"


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

    def __init__(self, model, int4_weights="auto"):
        self.model = model
        self.int4_weights = int4_weights
        self.nodes = _ordered_nodes(model)
        self.ranges = None
        self._observed = {}
        self.pinned = {}        # layer name -> PinnedKernel
        self.folded_bn = set()  # names of BN layers folded into the kernel before them
        self._clones = {}
        self.outputs = {}       # layer name -> ("staircase" | "int8", parameters)
        self.skip_calibration = set()
        self.activations = {}   # kernel layer name -> its activation function
        self.quantize = True    # False: the same network in float (for the size comparison)
        self._plan()

    # ----------------------------------------------------------------- planning
    def _plan(self):
        consumers = _consumers(self.model)
        producer = {}
        for node in self.nodes:
            for tensor_id in node.flat_output_ids:
                producer[tensor_id] = node
        folds = {}
        for node in self.nodes:
            if type(node.layer).__name__ != "BatchNormalization" or len(node.flat_input_ids) != 1:
                continue
            source = producer.get(node.flat_input_ids[0])
            if source is None or _class(source.layer) not in KERNEL_ATTRIBUTES:
                continue
            if _class(source.layer) == "DepthwiseConv2D" or not _is_linear(source.layer):
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
            inner = _inner(reader.layer)
            relu = type(inner).__name__ == "ReLU" and not getattr(inner, "negative_slope", 0) and (
                getattr(inner, "max_value", None) is None and not getattr(inner, "threshold", 0))
            relu = relu or (type(inner).__name__ == "Activation"
                            and getattr(inner.activation, "__name__", "") == "relu")
            if not relu or _quantizers(reader.layer)[2] is None:
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
        fold = bn_fold_factors(bn, kernel.shape[-1]) if bn is not None else None
        if isinstance(weight_q, QNetsQuantizer):
            pinned = pin_qnets_kernel(
                kernel, bias, weight_v["alpha"].numpy(), weight_v["beta"].numpy(),
                weight_v["thresholds"].numpy(), weight_q.levels, fold, self.int4_weights)
        elif isinstance(weight_q, Int8WeightQuantizer) or weight_q is not None:
            quantized = weight_q(kernel_var, training=False, weights=weight_v).numpy()
            pinned = pin_int8_kernel(quantized, bias, weight_v["min_var"].numpy(),
                                     weight_v["max_var"].numpy(), fold)
        else:
            pinned = pin_float_kernel(kernel, bias, fold)
        if type(inner).__name__ == "DepthwiseConv2D":
            pinned.range_min = np.asarray(np.min(pinned.range_min), np.float32)
            pinned.range_max = np.asarray(np.max(pinned.range_max), np.float32)
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
    def _kernel_layer(self, layer, x):
        pinned = self.pinned[layer.name]
        clone, attr = self._clones[layer.name]
        lo, hi = pinned.range_min, pinned.range_max
        per_channel = np.ndim(lo) > 0 and not (np.all(lo == lo.flat[0]) and np.all(hi == hi.flat[0]))
        if not per_channel:
            lo, hi = float(np.min(lo)), float(np.max(hi))
        kernel = tf.constant(pinned.kernel)
        if not self.quantize:
            setattr(clone, attr, kernel)
            clone.bias = tf.constant(pinned.bias)
            return clone.call(x)
        name = f"{layer.name}/pinned_kernel"
        if _class(layer) == "Dense" and per_channel and len(x.shape) == 2:
            # TFLite stores FULLY_CONNECTED weights transposed, which a per-channel range on the
            # last axis cannot follow; a 1x1 CONV_2D keeps per-channel int8 weights exact.
            kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                tf.constant(pinned.kernel[None, None]), lo, hi, num_bits=pinned.num_bits,
                narrow_range=True, name=name)
            y = tf.nn.conv2d(tf.reshape(x, [-1, 1, 1, x.shape[-1]]), kernel, strides=1,
                             padding="VALID")
            y = tf.nn.bias_add(y, tf.constant(pinned.bias))
            return tf.reshape(y, [-1, pinned.kernel.shape[-1]])
        if _class(layer) == "Conv1D":
            return self._conv1d_as_conv2d(clone, pinned, x, lo, hi, per_channel, name)
        if per_channel:
            kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                kernel, lo, hi, num_bits=pinned.num_bits, narrow_range=True, name=name)
        else:
            kernel = tf.quantization.fake_quant_with_min_max_vars(
                kernel, lo, hi, num_bits=pinned.num_bits, narrow_range=True, name=name)
        setattr(clone, attr, kernel)
        clone.bias = tf.constant(pinned.bias)
        return clone.call(x)

    @staticmethod
    def _conv1d_as_conv2d(clone, pinned, x, lo, hi, per_channel, name):
        """Conv1D written as a height-1 Conv2D: the converter's own Conv1D lowering reshapes a
        per-channel quantized kernel and loses its channel axis."""
        if clone.padding == "causal" or clone.groups != 1 or clone.data_format != "channels_last":
            raise ValueError(
                f"Layer {clone.name!r}: export supports Conv1D with padding 'same'/'valid', "
                "groups=1 and channels_last.")
        kernel = tf.constant(pinned.kernel[None])
        if per_channel:
            kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                kernel, lo, hi, num_bits=pinned.num_bits, narrow_range=True, name=name)
        else:
            kernel = tf.quantization.fake_quant_with_min_max_vars(
                kernel, lo, hi, num_bits=pinned.num_bits, narrow_range=True, name=name)
        y = tf.nn.conv2d(tf.expand_dims(x, 1), kernel, strides=[1, 1, clone.strides[0], 1],
                         padding=clone.padding.upper(),
                         dilations=[1, 1, clone.dilation_rate[0], 1])
        y = tf.nn.bias_add(y, tf.constant(pinned.bias))
        return tf.squeeze(y, 1)

    def _activation(self, layer, x):
        """The kernel layer's activation; ranges before anything TFLite cannot fuse (softmax, ...)."""
        activation = self.activations[layer.name]
        name = getattr(activation, "__name__", "")
        if name in ("linear", "relu", "relu6"):
            return activation(x)
        return activation(self._calibrated(f"{layer.name}/preactivation", x))

    def _output(self, layer, x):
        if not self.quantize:
            return x
        kind, values = self.outputs.get(layer.name, (None, None))
        if kind == "staircase":
            return lower_staircase(x, *values, name=layer.name)
        if kind == "int8":
            return fake_quant(x, *values)
        if layer.name in self.skip_calibration:
            return x
        return self._calibrated(layer.name, x)

    def forward(self, inputs):
        """The export computation for one input batch (eager or traced)."""
        values = {}
        for tensor in self.model.inputs:
            values[str(id(tensor))] = self._calibrated("__input__", inputs)
        for node in self.nodes:
            layer = node.layer
            cls = _class(layer)
            if cls in KERNEL_ATTRIBUTES:
                out = self._output(layer, self._kernel_layer(layer, values[node.flat_input_ids[0]]))
            elif layer.name in self.folded_bn:
                out = values[node.flat_input_ids[0]]
            elif cls in PASS_THROUGH:
                out = _inner(layer)(values[node.flat_input_ids[0]], training=False)
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

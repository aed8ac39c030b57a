"""Step 1 of the export pipeline (plan -> calibrate -> emit): what the export graph will be.

:func:`make_plan` walks the description of a :func:`tf_qnets.quantize_model` result
(:mod:`tf_qnets.core.network`, from either Keras and any backend) once and records what is
fixed before any data is seen: the graph facts (nodes in order, who produces and who reads
each tensor), each layer's output quantizer (a staircase's ``alpha``, ``beta``,
thresholds and levels, or an int8 range), and then lets every rewrite of
:data:`tf_qnets.export.rewrites.REWRITES` claim the nodes it lowers, in order: a later (more
specific) rewrite takes a node over from an earlier one. A rewrite keeps its own decisions in
``plan.notes[rewrite.name]``. Nothing in a plan changes after :func:`make_plan` returns;
decisions that need traced tensors (the input scale of an aligned layer) are taken while
emitting (:mod:`tf_qnets.export.emit`).

Example::

    plan = make_plan(describe(qat_model), int4_weights=False, exact_uniform=False)
    plan.claims["quant_conv1"].name      # "aligned staircase": the rewrite that emits it
"""

import numpy as np

from tf_qnets.core.lowering import DEFAULT_FINER_INPUTS
from tf_qnets.core.network import Int8Range, Staircase
from tf_qnets.export.tf_layers import build_layer

__all__ = ["ExportPlan", "make_plan"]


class ExportPlan:
    """Graph facts, output quantizers, and which rewrite emits each node (see the module docstring).

    Attributes:
      network: the :class:`tf_qnets.core.network.NetworkDescription` being exported.
      nodes: its nodes in execution order (each a ``NodeDescription`` whose ``layer`` is a
        ``LayerDescription``).
      producer: tensor id -> the node that computes it.
      readers: tensor id -> the nodes that read it.
      consumers: tensor id -> number of nodes (plus model outputs) reading it.
      node_by_name: layer name -> its node.
      outputs: layer name -> ``("staircase", (alpha, beta, thresholds, levels))`` or
        ``("int8", (lo, hi))``: the output quantizer export reproduces.
      claims: layer name -> the rewrite that emits its node.
      notes: rewrite name -> that rewrite's planning decisions.
      int4_weights, exact_uniform, finer_inputs: the export options (see ``export_tflite``).
    """

    def __init__(self, network, int4_weights=False, exact_uniform=False, finer_inputs=DEFAULT_FINER_INPUTS,
                 native=None):
        self.network = network
        self.native = dict(native or {})
        self.int4_weights = int4_weights
        self.exact_uniform = exact_uniform
        self.finer_inputs = finer_inputs
        self.nodes = network.nodes
        self.consumers = {}
        self.producer = {}
        self.readers = {}
        self.node_by_name = dict(network.node_by_name)
        for node in self.nodes:
            for tensor_id in node.flat_output_ids:
                self.producer[tensor_id] = node
            for tensor_id in node.flat_input_ids:
                self.readers.setdefault(tensor_id, []).append(node)
                self.consumers[tensor_id] = self.consumers.get(tensor_id, 0) + 1
        for tensor_id in network.output_ids:
            self.consumers[tensor_id] = self.consumers.get(tensor_id, 0) + 1
        self.outputs = {}
        for node in self.nodes:
            quantizer = node.layer.output_quantizer
            if isinstance(quantizer, Staircase):
                self.outputs[node.layer.name] = ("staircase", quantizer.as_tuple())
            elif isinstance(quantizer, Int8Range):
                self.outputs[node.layer.name] = ("int8", (float(np.min(quantizer.lo)), float(np.max(quantizer.hi))))
            elif quantizer is not None:
                raise ValueError(
                    f"Layer {node.layer.name!r}: its output quantizer {quantizer!r} cannot be "
                    "exported (export lowers staircases and 8-bit ranges).")
        self.claims = {}
        self.notes = {}
        self._tf_layers = {}

    def tf_layer(self, layer):
        """The built TensorFlow (tf_keras) layer of the described ``layer``, made once
        (:func:`tf_qnets.export.tf_layers.build_layer`)."""
        if layer.name not in self._tf_layers:
            self._tf_layers[layer.name] = build_layer(layer, native=self.native.get(layer.name))
        return self._tf_layers[layer.name]

    def claim(self, node, rewrite):
        """``rewrite`` emits ``node`` (replacing an earlier, less specific claim)."""
        self.claims[node.layer.name] = rewrite

    def claimed_by(self, layer_name, rewrite_name):
        """True when the rewrite called ``rewrite_name`` emits ``layer_name``."""
        rewrite = self.claims.get(layer_name)
        return rewrite is not None and rewrite.name == rewrite_name

    def note(self, rewrite_name):
        """The planning decisions of one rewrite (an empty dict before it planned)."""
        return self.notes.setdefault(rewrite_name, {})

    def only_reader(self, tensor_id):
        """The one node reading ``tensor_id`` when nothing else (no model output) does, else None."""
        users = self.readers.get(tensor_id, [])
        if len(users) == 1 and self.consumers.get(tensor_id, 0) == 1:
            return users[0]
        return None

    def source_node(self, node):
        """The node producing ``node``'s (first) input, or None for a model input."""
        return self.producer.get(node.flat_input_ids[0]) if node.flat_input_ids else None


def make_plan(network, int4_weights=False, exact_uniform=False, finer_inputs=DEFAULT_FINER_INPUTS,
              native=None):
    """Build the :class:`ExportPlan` of a described network: every rewrite plans, in order.
    ``native``: layer name -> a TensorFlow layer to call for a class export cannot rebuild
    (a Keras 2 model's own layers)."""
    from tf_qnets.export.rewrites import REWRITES

    plan = ExportPlan(network, int4_weights=int4_weights, exact_uniform=exact_uniform,
                      finer_inputs=finer_inputs, native=native)
    for rewrite in REWRITES:
        rewrite.plan(plan)
    unclaimed = [node.layer.name for node in plan.nodes if node.layer.name not in plan.claims]
    if unclaimed:  # the last rewrite (calling the layer) claims everything: a bug otherwise
        raise AssertionError(f"export plan: no rewrite claimed {unclaimed}")
    return plan

"""The tensor graph of a :class:`tf_qnets.core.network.NetworkDescription`, and the layers
through which an int8 tensor keeps its values (what the bias lattices, the sums of
:mod:`tf_qnets.core.add_margin` and the export's rewrites follow back to a fixed scale).

Example::

    producer, consumers, readers = graph_of(network)
    producer[node.flat_input_ids[0]].layer.name     # the layer feeding ``node``
"""

import numpy as np

__all__ = ["INT8_KEEPING_LAYERS", "graph_of", "is_identity_normalization"]

# Layers whose output holds their input's int8 values (same scale; padding adds zeros).
INT8_KEEPING_LAYERS = ("MaxPooling1D", "MaxPooling2D", "ZeroPadding1D", "ZeroPadding2D", "Reshape",
                       "Flatten", "Dropout", "SpatialDropout1D", "SpatialDropout2D")


def graph_of(network):
    """``(producer, consumers, readers)``: tensor id -> its node, how many nodes (and model
    outputs) read it, the nodes that read it."""
    producer, consumers, readers = {}, {}, {}
    for node in network.nodes:
        for tensor_id in node.flat_output_ids:
            producer[tensor_id] = node
        for tensor_id in node.flat_input_ids:
            consumers[tensor_id] = consumers.get(tensor_id, 0) + 1
            readers.setdefault(tensor_id, []).append(node)
    for tensor_id in network.output_ids:
        consumers[tensor_id] = consumers.get(tensor_id, 0) + 1
    return producer, consumers, readers


def is_identity_normalization(layer):
    """True for a described ``Normalization`` that computes ``x`` itself (mean 0, variance 1:
    a ``keras.applications`` network built with ``weights=None``); the export emits it as
    nothing (:mod:`tf_qnets.export.rewrites.affine`), so it keeps its input's int8 values."""
    if layer.class_name != "Normalization" or layer.config.get("invert", False):
        return False
    mean = layer.weights.get("mean", layer.config.get("mean"))
    variance = layer.weights.get("variance", layer.config.get("variance"))
    if mean is None or variance is None:
        return False
    return bool(np.all(np.asarray(mean) == 0.0) and np.all(np.asarray(variance) == 1.0))

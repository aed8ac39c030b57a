"""Step 0 of the export pipeline: the QAT model, from either Keras, as a backend-neutral description.

:func:`describe` checks that ``qat_model`` is a :func:`tf_qnets.quantize_model` result and
asks the model's own path to describe it (:mod:`tf_qnets.keras2.describe_network` for a
tf_keras model, :mod:`tf_qnets.keras3.describe_network` for a Keras 3 model on any backend):
integer levels, scales and thresholds of every quantizer, the weights as NumPy arrays, the
layer graph (:mod:`tf_qnets.core.network`). Everything after this step reads the
description only. The Keras 3 path is imported only for a Keras 3 model, and describing it
imports no TensorFlow.

Example::

    network, native = describe(qat_model)
    [node.layer.name for node in network.nodes]
"""

from tf_qnets.core.keras_version import is_keras3_object

__all__ = ["describe"]


def _check_one_input_one_output(network, argument):
    inputs, outputs = len(network.input_ids), len(network.output_ids)
    if inputs != 1 or outputs != 1:
        raise ValueError(
            f"`{argument}` has {inputs} inputs and {outputs} outputs; export supports models "
            "with one input and one output.")


def describe(qat_model, argument="qat_model"):
    """``(NetworkDescription, native layers)`` of a QAT model; ``native`` maps layer names to
    TensorFlow layers export may call as they are (a Keras 2 model's own layers; empty for
    Keras 3, whose layers may compute in JAX)."""
    if is_keras3_object(qat_model):
        # imported here: a Keras 2 export never loads Keras 3
        from tf_qnets.keras3.describe_network import describe_network as describe_keras3

        network = describe_keras3(qat_model, argument)
        native = {}
    else:
        from tf_qnets.keras2.api import is_quantized_model
        from tf_qnets.keras2.backend import require_keras2_model
        from tf_qnets.keras2.describe_network import describe_network, native_layers

        require_keras2_model(qat_model, argument)
        if not is_quantized_model(qat_model):
            raise TypeError(
                f"`{argument}` was not produced by tf_qnets.quantize_model (it has no QNetsWrapper "
                "layers); quantize and fine-tune it first, then export.")
        network = describe_network(qat_model)
        native = native_layers(qat_model)
    _check_one_input_one_output(network, argument)
    return network, native

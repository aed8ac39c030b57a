"""``tf_qnets.quantize_model``: one entry point for Keras 2 and Keras 3 models.

The model's own class says which Keras built it: a ``tf_keras`` model goes to the Keras 2
path (``tf_qnets.keras2``: tfmot's ``quantize_apply`` flow), a Keras 3 model (``import
keras``, TensorFlow or JAX backend) to the Keras 3 path (``tf_qnets.keras3``). Only the path
a model needs is imported: quantizing a Keras 3 model on JAX never imports TensorFlow.
"""

import importlib

__all__ = ["is_keras3_object", "quantize_model"]


def is_keras3_object(obj):
    """True for an object of Keras 3 (the ``keras`` package), False for ``tf_keras`` and others."""
    module = type(obj).__module__ or ""
    return module == "keras" or module.startswith("keras.")


def quantize_model(model, w_bits=3, a_bits=None, **options):
    """Turn a float Keras model into a Quantization Network ready for fine-tuning.

    Keras 2 (``tf_keras``) models: :func:`tf_qnets.keras2.api.quantize_model`; Keras 3
    models: :func:`tf_qnets.keras3.api.quantize_model`. Both take the same arguments
    (``w_bits``, ``a_bits``, ``calibration_data``, ``weight_scheme``, ``thresholds``,
    ``first_last``, ``per_layer``, ``exclude``, ``gradient``, ``activation_gradient``,
    ``train_thresholds``, ``verbose``; ``batch_norm`` on Keras 2 only) with the same meaning,
    read by one planner (``tf_qnets.core.plan``). Each quantized tensor ``x`` becomes::

        training:  alpha * (sum_i s_i * sigmoid(clip(T (beta x - b_i), -10, 10)) - o)
        inference: alpha * (sum_i s_i * [beta x > b_i] - o)

    Example::

        qat = tf_qnets.quantize_model(float_model, w_bits=3, a_bits=3, calibration_data=x[:512])
    """
    path = "tf_qnets.keras3.api" if is_keras3_object(model) else "tf_qnets.keras2.api"
    return importlib.import_module(path).quantize_model(model, w_bits, a_bits, **options)

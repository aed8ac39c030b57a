"""tf_qnets: Quantization Networks (Yang et al., CVPR 2019) for Keras.

    import tf_qnets
    qat = tf_qnets.quantize_model(float_model, w_bits=3, a_bits=3, calibration_data=ds.take(8))
    qat.compile(optimizer, loss, metrics, jit_compile=True)
    qat.fit(ds, epochs=10, callbacks=[tf_qnets.TemperatureScheduler()])   # T = 10, 20, ..., 100
    qat.evaluate(test_ds)          # hard staircase: what the device computes

``import tf_qnets`` imports no framework: every public name below is loaded from its
subpackage on first use (``tf_qnets.core`` needs numpy only; the Keras 2 names load
TensorFlow, tf_keras and tensorflow-model-optimization). Importing tf_qnets never changes
which Keras ``import keras`` or ``tf.keras`` gives you. The package's layers and import
rules: docs/architecture.md.
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "LevelSet": "tf_qnets.core.levels",
    "activation_levels": "tf_qnets.core.levels",
    "weight_levels": "tf_qnets.core.levels",
    "hard_staircase": "tf_qnets.tf.staircase",
    "soft_staircase": "tf_qnets.tf.staircase",
    "soft_staircase_reference": "tf_qnets.tf.staircase",
    "broadcast_from_first_replica": "tf_qnets.tf.distribute",
    "is_chief": "tf_qnets.tf.distribute",
    "jit_compile_supported": "tf_qnets.tf.distribute",
    "replica_values": "tf_qnets.tf.distribute",
    "strategy_from_name": "tf_qnets.tf.distribute",
    "get_quantizer": "tf_qnets.keras2.aliases",
    "quantizer_aliases": "tf_qnets.keras2.aliases",
    "FrozenStatisticsBatchNormalization": "tf_qnets.keras2.batch_norm",
    "count_quantizers": "tf_qnets.frontend",
    "is_quantized_model": "tf_qnets.frontend",
    "quantize_model": "tf_qnets.frontend",
    "QNetsQuantizeConfig": "tf_qnets.keras2.configs",
    "quantization_gap": "tf_qnets.frontend",
    "Int8OutputQuantizer": "tf_qnets.keras2.int8",
    "Int8WeightQuantizer": "tf_qnets.keras2.int8",
    "QNetsQuantizer": "tf_qnets.keras2.quantizer",
    "recalibrate_batch_norm": "tf_qnets.frontend",
    "TemperatureScheduler": "tf_qnets.callbacks",
    "get_temperatures": "tf_qnets.frontend",
    "set_temperature": "tf_qnets.frontend",
    "QNetsScheme": "tf_qnets.keras2.scheme",
    "load_model": "tf_qnets.frontend",
    "quantize_scope": "tf_qnets.keras2.scope",
    "summary": "tf_qnets.frontend",
    "QuantizerTensorBoard": "tf_qnets.callbacks",
    "QNetsWrapper": "tf_qnets.keras2.wrapper",
    "quantizer_states": "tf_qnets.keras2.wrapper",
    "export_tflite": "tf_qnets.export",
    "inspect_tflite": "tf_qnets.export",
    "verify_tflite": "tf_qnets.export",
    "snap_biases": "tf_qnets.frontend",
}

# subpackages and tool modules reachable as attributes (``tf_qnets.export``, ...)
_SUBMODULES = ("core", "tf", "keras2", "keras3", "export", "cli", "datasets", "runtime",
               "frontend", "callbacks")

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"tf_qnets.{name}")
    raise AttributeError(f"module 'tf_qnets' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC) | set(_SUBMODULES))

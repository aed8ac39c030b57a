"""tf_qnets: Quantization Networks (Yang et al., CVPR 2019) for Keras and tfmot.

Importing tf_qnets selects Keras 2 (``tf_keras``), which tensorflow-model-optimization needs.

    import tf_qnets
    qat = tf_qnets.quantize_model(float_model, w_bits=3, a_bits=3, calibration_data=ds.take(8))
    qat.compile(optimizer, loss, metrics, jit_compile=True)
    qat.fit(ds, epochs=10, callbacks=[tf_qnets.TemperatureScheduler()])   # T = 10, 20, ..., 100
    qat.evaluate(test_ds)          # hard staircase: what the device computes
"""

from tf_qnets import _keras  # noqa: F401  (must come first: selects Keras 2)
from tf_qnets.aliases import get_quantizer, quantizer_aliases
from tf_qnets.batch_norm import FrozenStatisticsBatchNormalization
from tf_qnets.api import count_quantizers, is_quantized_model, quantize_model
from tf_qnets.configs import QNetsQuantizeConfig
from tf_qnets.distribute import (
    broadcast_from_first_replica,
    is_chief,
    jit_compile_supported,
    replica_values,
    strategy_from_name,
)
from tf_qnets.export import export_tflite, inspect_tflite, verify_tflite
from tf_qnets.gap import quantization_gap
from tf_qnets.int8 import Int8OutputQuantizer, Int8WeightQuantizer
from tf_qnets.levels import LevelSet, activation_levels, weight_levels
from tf_qnets.quantizer import QNetsQuantizer
from tf_qnets.recalibrate import recalibrate_batch_norm
from tf_qnets.schedule import TemperatureScheduler, get_temperatures, set_temperature
from tf_qnets.scheme import QNetsScheme
from tf_qnets.scope import load_model, quantize_scope
from tf_qnets.staircase import hard_staircase, soft_staircase, soft_staircase_reference
from tf_qnets.summary import summary  # noqa: E402  (the function; the module stays importable)
from tf_qnets.tensorboard import QuantizerTensorBoard
from tf_qnets.wrapper import QNetsWrapper, quantizer_states

__version__ = "0.1.0"

__all__ = [
    "FrozenStatisticsBatchNormalization",
    "Int8OutputQuantizer",
    "Int8WeightQuantizer",
    "LevelSet",
    "QNetsQuantizeConfig",
    "QNetsQuantizer",
    "QNetsScheme",
    "QNetsWrapper",
    "QuantizerTensorBoard",
    "TemperatureScheduler",
    "activation_levels",
    "broadcast_from_first_replica",
    "count_quantizers",
    "export_tflite",
    "get_quantizer",
    "get_temperatures",
    "hard_staircase",
    "inspect_tflite",
    "is_chief",
    "is_quantized_model",
    "jit_compile_supported",
    "load_model",
    "quantize_model",
    "quantization_gap",
    "quantize_scope",
    "quantizer_aliases",
    "quantizer_states",
    "recalibrate_batch_norm",
    "replica_values",
    "set_temperature",
    "soft_staircase",
    "strategy_from_name",
    "soft_staircase_reference",
    "summary",
    "verify_tflite",
    "weight_levels",
]

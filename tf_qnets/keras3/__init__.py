"""Quantization Networks for Keras 3 (``import keras``; TensorFlow or JAX backend).

    from tf_qnets.keras3 import TemperatureScheduler, quantize_model

    qat = quantize_model(model, w_bits=3, a_bits=3, calibration_data=x_train[:512])
    qat.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=True)
    qat.fit(x_train, y_train, epochs=10, callbacks=[TemperatureScheduler()])
    qat.evaluate(x_test, y_test)          # hard staircase: what the device computes
    summary(qat)                          # per-layer bits, bytes and MACs (tf_qnets.keras3.summary)

BatchNormalization layers train with frozen statistics by default (``batch_norm="frozen"``,
:mod:`tf_qnets.keras3.batch_norm`); with ``batch_norm="batch"``, call
:func:`recalibrate_batch_norm` after ``fit``.

This subpackage imports ``keras``, ``numpy`` and :mod:`tf_qnets.core` only: under the JAX
backend it runs without TensorFlow installed. Saved models load back with plain
``keras.saving.load_model`` once this package is imported (its classes are registered).
"""

from tf_qnets.keras3.aliases import get_quantizer, quantizer_aliases
from tf_qnets.keras3.api import count_quantizers, is_quantized_model, quantize_model, quantizers
from tf_qnets.keras3.batch_norm import FrozenStatisticsBatchNormalization
from tf_qnets.keras3.gap import quantization_gap
from tf_qnets.keras3.quantizer import HARD_FORWARD_TEMPERATURE, QNetsQuantizer
from tf_qnets.keras3.recalibrate import recalibrate_batch_norm
from tf_qnets.keras3.schedule import TemperatureScheduler, get_temperatures, set_temperature
from tf_qnets.keras3.staircase import hard_staircase, soft_staircase
from tf_qnets.keras3.summary import summary
from tf_qnets.keras3.wrapper import QNetsWrapper

__all__ = [
    "FrozenStatisticsBatchNormalization",
    "HARD_FORWARD_TEMPERATURE",
    "QNetsQuantizer",
    "QNetsWrapper",
    "TemperatureScheduler",
    "count_quantizers",
    "get_quantizer",
    "get_temperatures",
    "hard_staircase",
    "is_quantized_model",
    "quantization_gap",
    "quantize_model",
    "quantizer_aliases",
    "quantizers",
    "recalibrate_batch_norm",
    "set_temperature",
    "soft_staircase",
    "summary",
]

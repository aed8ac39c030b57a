"""Integer TFLite export of tf_qnets models, its verification and inspection.

    report = tf_qnets.export.export_tflite(qat, "model.tflite", representative_data=x[:512])
    print(report)
    print(tf_qnets.export.verify_tflite(qat, "model.tflite", (x_test, y_test)))
    print(tf_qnets.export.inspect_tflite("model.tflite"))

Modules: ``weights`` (pinned codes, BN folding), ``activations`` (int8 staircases),
``graph`` (the export graph), ``convert`` (conversion, atomic write), ``ops_check``
(builtin integer ops only), ``inspect`` (read a .tflite), ``verify`` (Keras vs TFLite),
``diagnose`` (per-layer activation codes that differ between Keras and TFLite),
``bias_lattice`` (the int32 bias units a file used).
"""

from tf_qnets.export.convert import ExportError
from tf_qnets.export.diagnose import LayerFlips, staircase_flips
from tf_qnets.export.exporter import ExportReport, export_tflite
from tf_qnets.export.inspect import InspectReport, WeightTensor, inspect_tflite
from tf_qnets.export.ops_check import check_builtin_int8, find_problems
from tf_qnets.export.verify import VerificationReport, verify_tflite

__all__ = [
    "ExportError",
    "ExportReport",
    "InspectReport",
    "LayerFlips",
    "VerificationReport",
    "WeightTensor",
    "check_builtin_int8",
    "export_tflite",
    "find_problems",
    "inspect_tflite",
    "staircase_flips",
    "verify_tflite",
]

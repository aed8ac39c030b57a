"""Run an exported .tflite file with the standalone LiteRT runtime, without TensorFlow.

The interpreter comes from ``ai_edge_litert.interpreter`` (LiteRT, the maintained successor
of ``tflite-runtime``) or, when only that one is installed, ``tflite_runtime.interpreter``.
This module imports neither TensorFlow nor Keras, so a phone-like process can use it.
(``import tf_qnets.runtime`` loads the ``tf_qnets`` package first, which imports TensorFlow;
a TensorFlow-free process loads this file directly, e.g. with ``importlib.util``.)

For int8 input/output models the real input is quantized with the input tensor's
``(scale, zero_point)``, ``q = clip(round(x / scale) + zero_point, -128, 127)``, and the
output dequantized with ``x = scale * (q - zero_point)``.

Example::

    interpreter = load_interpreter("model.tflite")
    logits = predict(interpreter, images)          # float32, batch first
"""

import importlib
import os

import numpy as np

__all__ = ["interpreter_module", "load_interpreter", "predict", "BACKENDS", "KERNELS"]

BACKENDS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
KERNELS = ("default", "reference")


def interpreter_module():
    """The first importable LiteRT interpreter module of :data:`BACKENDS`."""
    for name in BACKENDS:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(
        "No TFLite runtime found: install `ai-edge-litert` (pip install ai-edge-litert) or "
        "`tflite-runtime`.")


def load_interpreter(model, num_threads=None, builtin_only=False, kernels="default",
                     preserve_all_tensors=False):
    """An allocated Interpreter for ``model`` (a path or the file's bytes).

    ``builtin_only=True`` uses the plain builtin op resolver without default delegates,
    which fails for any op or op version outside the standard runtime.
    ``kernels="reference"`` runs TFLite's reference kernels (no XNNPACK delegate): the
    fixed-point arithmetic of TFLite's reference implementation, which rounds a requantized
    value twice (after the multiplier's mantissa, then after its power-of-two shift) where
    XNNPACK (``"default"``) rounds once, so the two can differ by one code (a few percent of
    a one-operator CONV_2D's outputs: ``benchmarks/exactness_probe.py``). ``preserve_all_tensors`` keeps intermediate
    tensors readable after ``invoke`` (debugging; only outside delegated parts).
    """
    if kernels not in KERNELS:
        raise ValueError(f"`kernels` must be one of {KERNELS}, got {kernels!r}.")
    module = interpreter_module()
    kwargs = {"num_threads": num_threads}
    if builtin_only:
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if kernels == "reference":
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_REF
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    if isinstance(model, (bytes, bytearray)):
        interpreter = module.Interpreter(model_content=bytes(model), **kwargs)
    else:
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No .tflite file at {path!r}.")
        interpreter = module.Interpreter(model_path=path, **kwargs)
    interpreter.allocate_tensors()
    return interpreter


def _quantize(x, detail):
    scale, zero_point = detail["quantization"]
    if detail["dtype"] in (np.float32, np.float16) or scale == 0:
        return x.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(detail["dtype"])


def _dequantize(y, detail):
    scale, zero_point = detail["quantization"]
    if np.issubdtype(y.dtype, np.floating) or scale == 0:
        return y.astype(np.float32)
    return (scale * (y.astype(np.float32) - zero_point)).astype(np.float32)


def predict(interpreter, inputs, batch_size=256):
    """Real-valued outputs of a single-input, single-output model for a batch-first array."""
    inputs = np.asarray(inputs, dtype=np.float32)
    input_detail = interpreter.get_input_details()[0]
    expected = tuple(input_detail["shape"][1:])
    if tuple(inputs.shape[1:]) != expected:
        raise ValueError(
            f"`inputs` have shape {inputs.shape}; the model expects (batch,) + {expected}.")
    outputs = []
    current = None
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
        if current != len(batch):
            interpreter.resize_tensor_input(input_detail["index"], (len(batch),) + expected)
            interpreter.allocate_tensors()
            current = len(batch)
        interpreter.set_tensor(input_detail["index"], _quantize(batch, input_detail))
        interpreter.invoke()
        output_detail = interpreter.get_output_details()[0]
        outputs.append(_dequantize(interpreter.get_tensor(output_detail["index"]), output_detail))
    return np.concatenate(outputs, axis=0)

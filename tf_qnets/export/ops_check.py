"""Check that a .tflite file is an integer model of standard builtin ops.

Rules (issue 3, requirements 1 and 7):

* no custom op and no Flex (select TensorFlow) op;
* every op outside QUANTIZE / DEQUANTIZE reads and writes integer tensors only
  (int8 activations and weights, INT4 weights, int32 biases and shapes);
* float tensors appear only as the model's own inputs/outputs, through QUANTIZE /
  DEQUANTIZE at the edges (none at all with int8 input/output);
* every op and op version is provided by the plain builtin op resolver of the
  standard runtime: the file is loaded with ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``
  (no XNNPACK, no custom registrations), which fails on anything else.

Example::

    problems = find_problems("model.tflite")     # [] for a clean file
    check_builtin_int8("model.tflite")          # raises ValueError listing the problems
"""

import os

from tf_qnets.export.inspect import _names, _walk, read_model, schema

__all__ = ["find_problems", "check_builtin_int8", "EDGE_OPS", "FLOAT_TYPES"]

EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")
FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16")


def _tensor_types(graph, op, type_names):
    indices = [op.Inputs(i) for i in range(op.InputsLength())]
    indices += [op.Outputs(i) for i in range(op.OutputsLength())]
    return [type_names[graph.Tensors(i).Type()] for i in indices if i >= 0]


def _layer_of(graph, op):
    """The Keras layer an op comes from: the first name scope of its output tensor's name."""
    if op.OutputsLength() == 0 or op.Outputs(0) < 0:
        return None
    name = graph.Tensors(op.Outputs(0)).Name().decode(errors="replace")
    first = name.split(";")[0].split("/")[0]
    return first or None


def find_problems(path):
    """Every rule the file at ``path`` (or these bytes) breaks, as readable strings (``[]``: clean)."""
    data, model = read_model(path)
    tfl = schema()
    type_names = _names(tfl.TensorType)
    problems = []
    for graph, op, name, version in _walk(model, tfl, data):
        if name.startswith("CUSTOM") or name.startswith("FLEX") or "Flex" in name:
            problems.append(f"non-builtin op {name}")
            continue
        if name in EDGE_OPS:
            continue
        floats = sorted(set(_tensor_types(graph, op, type_names)) & set(FLOAT_TYPES))
        if floats:
            layer = _layer_of(graph, op)
            problems.append(f"float op {name} v{version} ({'/'.join(floats)} tensors)"
                            + (f" in layer {layer!r}" if layer else ""))
    try:
        from tf_qnets.runtime import load_interpreter

        load_interpreter(data, builtin_only=True)
    except ImportError as error:
        problems.append(f"cannot load the builtin runtime: {error}")
    except (RuntimeError, ValueError) as error:
        problems.append(f"the standard builtin runtime rejects the file: {error}")
    return problems


def check_builtin_int8(path):
    """Raise ``ValueError`` naming every problem :func:`find_problems` reports."""
    problems = find_problems(path)
    if problems:
        raise ValueError(
            f"{'the model' if isinstance(path, bytes) else repr(os.fspath(path))} is not a pure "
            "builtin integer model: " + "; ".join(problems))

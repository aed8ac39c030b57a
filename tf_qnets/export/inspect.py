"""Read a .tflite file without running it: op table, tensor dtypes, size and stored weight codes.

The flatbuffer is parsed with the schema bindings shipped in ``ai_edge_litert`` (or
TensorFlow's copy), so no interpreter and no TensorFlow import is needed. For every
constant weight tensor of a CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED op the
distinct stored integer codes are listed; INT4 weights are unpacked (two's-complement
nibbles, low nibble first).

Example::

    >>> report = inspect_tflite("model.tflite")          # doctest: +SKIP
    >>> print(report)                                     # doctest: +SKIP
    >>> report.weights[0].codes                           # doctest: +SKIP
    (-4, -2, -1, 0, 1, 2, 4)
"""

import collections
import dataclasses
import importlib
import os

import numpy as np

__all__ = ["InspectReport", "WeightTensor", "inspect_tflite", "read_model", "schema",
           "TFLITE_IDENTIFIER"]

TFLITE_IDENTIFIER = b"TFL3"
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
_NUMPY_TYPES = {"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32,
                "INT64": np.int64, "FLOAT32": np.float32, "FLOAT16": np.float16}


def schema():
    """The generated flatbuffer bindings of the TFLite schema."""
    for name in ("ai_edge_litert.schema_py_generated", "tflite_runtime.schema_py_generated",
                 "tensorflow.lite.python.schema_py_generated"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("Reading .tflite files needs `ai-edge-litert` (pip install ai-edge-litert).")


def _names(enum_class):
    return {value: key for key, value in vars(enum_class).items() if not key.startswith("_")}


def read_model(path):
    """``(bytes, schema Model object)`` of a file (or of bytes); ``ValueError`` if not TFLite."""
    if isinstance(path, (bytes, bytearray)):
        data, path = bytes(path), "<bytes>"
    else:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`path`: no file at {path!r}.")
        with open(path, "rb") as handle:
            data = handle.read()
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ValueError(
            f"`path` {path!r} is not a TFLite model (missing the 'TFL3' file identifier); the file is "
            "corrupt or of another format.")
    tfl = schema()
    try:
        model = tfl.Model.GetRootAsModel(data, 0)
        model.SubgraphsLength()
        if model.SubgraphsLength() < 1:
            raise ValueError("no subgraph")
        _walk(model, tfl, data)  # touch every table once so that truncation is detected here
    except Exception as error:  # noqa: BLE001 - any decoding failure means a corrupt file
        raise ValueError(f"`path` {path!r} is a corrupt TFLite file ({type(error).__name__}: {error}).") from None
    return data, model


@dataclasses.dataclass(frozen=True)
class WeightTensor:
    """One stored weight tensor: its name, type, shape, consuming op, distinct codes and the
    bytes its buffer takes in the file (``count`` for INT8, ``ceil(count / 2)`` for packed INT4)."""

    name: str
    dtype: str
    shape: tuple
    op: str
    codes: tuple
    per_channel: bool
    stored_bytes: int

    @property
    def code_factor(self):
        """The largest integer dividing every stored code (1 for an all-zero tensor): int8
        kernels of low-bit layers may be stored as ``k * level`` (docs/export.md)."""
        factor = int(np.gcd.reduce(np.abs(np.asarray(self.codes, np.int64)))) if self.codes else 0
        return max(factor, 1)

    @property
    def levels(self):
        """The distinct codes divided by :attr:`code_factor`: the layer's levels for a low-bit layer."""
        return tuple(int(code) // self.code_factor for code in self.codes)


@dataclasses.dataclass
class InspectReport:
    """What a .tflite file contains."""

    path: str
    size_bytes: int
    ops: list            # [(op name, version, count)]
    tensor_dtypes: dict  # dtype name -> number of tensors
    inputs: list         # [(name, dtype, shape)]
    outputs: list
    weights: list        # [WeightTensor]
    custom_ops: list

    def __str__(self):
        lines = [f"{self.path}: {self.size_bytes} bytes",
                 "ops (name, version, count):"]
        lines += [f"  {name:<24} v{version:<3} x{count}" for name, version, count in self.ops]
        lines.append("tensor dtypes: " + ", ".join(
            f"{name} {count}" for name, count in sorted(self.tensor_dtypes.items())))
        for kind, items in (("input", self.inputs), ("output", self.outputs)):
            for name, dtype, shape in items:
                lines.append(f"{kind}: {name} {dtype} {list(shape)}")
        lines.append("weight tensors (dtype, shape, distinct codes):")
        for w in self.weights:
            codes = list(w.levels) if len(w.codes) <= 16 else (
                f"{len(w.codes)} values in [{w.codes[0]}, {w.codes[-1]}]")
            if len(w.codes) <= 16 and w.code_factor > 1:
                codes = f"{w.code_factor} x {codes}"
            lines.append(f"  {w.name[:48]:<48} {w.dtype:<5} {list(w.shape)} {w.op}: {codes}")
        if self.custom_ops:
            lines.append("custom ops: " + ", ".join(self.custom_ops))
        return "\n".join(lines)


def _unpack_int4(raw, count):
    nibbles = np.empty(2 * len(raw), np.int8)
    nibbles[0::2] = raw & 0x0F
    nibbles[1::2] = (raw >> 4) & 0x0F
    nibbles = nibbles[:count]
    return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)


def _raw_buffer(model, data, tensor):
    """The bytes stored for ``tensor`` as a uint8 array (``None`` if it has none)."""
    buffer = model.Buffers(tensor.Buffer())
    if buffer.Offset() > 1:
        return np.frombuffer(data, np.uint8, count=buffer.Size(), offset=buffer.Offset())
    if buffer.DataLength() > 0:
        return np.asarray(buffer.DataAsNumpy(), np.uint8)
    return None


def tensor_values(model, tfl, data, tensor):
    """The constant data of ``tensor`` as a numpy array (``None`` if it has none)."""
    type_name = _names(tfl.TensorType)[tensor.Type()]
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    count = int(np.prod(shape)) if shape else 1
    raw = _raw_buffer(model, data, tensor)
    if raw is None:
        return None
    if type_name == "INT4":
        return _unpack_int4(raw, count).reshape(shape)
    dtype = _NUMPY_TYPES.get(type_name)
    if dtype is None:
        return None
    return np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape)


def _op_name(tfl, model, op):
    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = _names(tfl.BuiltinOperator).get(builtin, f"UNKNOWN_{builtin}")
    if name == "CUSTOM":
        custom = code.CustomCode()
        name = "CUSTOM:" + (custom.decode() if custom else "?")
    return name, code.Version()


def _walk(model, tfl, data):
    """Yield ``(subgraph, op, op name, version)`` for every operator."""
    found = []
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(o)
            name, version = _op_name(tfl, model, op)
            found.append((subgraph, op, name, version))
    return found


def inspect_tflite(path):
    """Parse ``path`` (or bytes) into an :class:`InspectReport` (``ValueError`` for a corrupt file)."""
    data, model = read_model(path)
    tfl = schema()
    type_names = _names(tfl.TensorType)
    operations = _walk(model, tfl, data)
    counts = collections.Counter((name, version) for _, _, name, version in operations)
    ops = [(name, version, count) for (name, version), count in sorted(counts.items())]
    dtypes = collections.Counter()
    subgraph = model.Subgraphs(0)
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            dtypes[type_names[graph.Tensors(t).Type()]] += 1

    def describe(index):
        tensor = subgraph.Tensors(index)
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        return tensor.Name().decode(), type_names[tensor.Type()], shape

    weights = []
    for graph, op, name, _ in operations:
        if name not in WEIGHT_OPS or op.InputsLength() < 2:
            continue
        index = op.Inputs(1 if name != "TRANSPOSE_CONV" else 1)
        tensor = graph.Tensors(index)
        values = tensor_values(model, tfl, data, tensor)
        type_name = type_names[tensor.Type()]
        if values is None or type_name not in ("INT8", "INT4", "UINT8"):
            continue
        quantization = tensor.Quantization()
        per_channel = quantization is not None and quantization.ScaleLength() > 1
        weights.append(WeightTensor(
            tensor.Name().decode(), type_name, tuple(values.shape), name,
            tuple(int(v) for v in np.unique(values)), per_channel,
            stored_bytes=int(_raw_buffer(model, data, tensor).size)))
    return InspectReport(
        path="<bytes>" if isinstance(path, (bytes, bytearray)) else os.fspath(path),
        size_bytes=len(data),
        ops=ops,
        tensor_dtypes=dict(dtypes),
        inputs=[describe(subgraph.Inputs(i)) for i in range(subgraph.InputsLength())],
        outputs=[describe(subgraph.Outputs(i)) for i in range(subgraph.OutputsLength())],
        weights=weights,
        custom_ops=sorted({name for _, _, name, _ in operations if name.startswith("CUSTOM")}),
    )

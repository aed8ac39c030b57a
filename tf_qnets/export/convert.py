"""TFLite conversion of an export graph and atomic file writing.

The export graph carries a fake-quantization range on every tensor, so the converter
runs in quantization-aware mode: ``optimizations=[DEFAULT]`` turns each FakeQuant into
int8 (or INT4 for 4-bit weight FakeQuant) quantization parameters; no representative
dataset is needed at this point (calibration already happened in the graph).

Files are written atomically: the bytes go to a temporary file in the target folder,
are flushed to disk, and replace the target with ``os.replace``; on any failure the
temporary file is removed and an existing target stays untouched.

Example::

    data = convert_function(concrete_function, int8_io=False)
    write_atomic("model.tflite", data)
"""

import contextlib
import io
import os
import tempfile

from tf_qnets.keras2.backend import tf

__all__ = ["ExportError", "convert_function", "write_atomic", "check_writable"]


class ExportError(RuntimeError):
    """The TFLite converter rejected the export graph."""


def convert_function(function, int8_io=False, quantize=True, quiet=True):
    """Convert a traced ``tf.function`` to TFLite bytes (int8 with ``quantize``, float otherwise).

    ``quiet`` swallows what the converter prints to Python's ``sys.stderr``; pass False from
    a second thread (the redirection is process-wide)."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        with contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext():
            return converter.convert()
    except Exception as error:  # noqa: BLE001 - the converter raises many types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"TFLite conversion failed: {first}") from error


def check_writable(path, argument="path"):
    """Raise a clear error unless a file can be created at ``path``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{argument}` must be a file path, got {type(path).__name__}.")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"`{argument}` {path!r} is a folder; give a file name such as model.tflite.")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"`{argument}` {path!r}: the folder {folder!r} does not exist.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"`{argument}` {path!r}: the folder {folder!r} is not writable.")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise PermissionError(f"`{argument}` {path!r} exists and is not writable.")
    return path


def write_atomic(path, data):
    """Write ``data`` to ``path`` all at once (see the module docstring)."""
    path = check_writable(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".tflite", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    return path

"""Fashion-MNIST without a network: IDX files from a folder, tensorflow-datasets, or Debian's package.

``load_fashion_mnist(data_dir=None)`` returns ``((x_train, y_train), (x_test, y_test))``:
``uint8`` images of shape ``(N, 28, 28)`` (60000 train, 10000 test) and ``uint8`` labels 0..9.

Sources, in order:

1. ``data_dir``, a folder holding the four IDX files (each gzipped or not)::

       train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
       t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

   When ``data_dir`` is given, it is the only source tried.
2. ``tensorflow_datasets``, if installed and its ``fashion_mnist`` is already
   downloaded (``download=False``; any failure falls through quietly).
3. Debian's ``dataset-fashion-mnist`` package: ``/usr/share/datasets/fashion-mnist``.

Otherwise a ``FileNotFoundError`` says how to get the data.

The IDX format (http://yann.lecun.com/exdb/mnist/): a big-endian header, magic
``0x00 0x00 <type> <ndim>`` (type ``0x08`` = unsigned byte), then ``ndim`` big-endian
uint32 dimensions, then the data in C order.

Example::

    >>> from tf_qnets.datasets import load_fashion_mnist
    >>> (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    >>> x_train.shape, x_train.dtype, y_test.shape
    ((60000, 28, 28), dtype('uint8'), (10000,))
"""

import gzip
import os
import struct

import numpy as np

__all__ = ["load_fashion_mnist", "read_idx", "DEBIAN_DIR", "FILES"]

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type byte -> big-endian numpy dtype.
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_HOW_TO_GET = (
    "Install Debian's package (`apt-get install dataset-fashion-mnist`, files in "
    f"{DEBIAN_DIR}), install tensorflow-datasets with fashion_mnist already downloaded, or "
    "pass `data_dir=` a folder holding the four IDX files (gzipped or not): "
    + ", ".join(FILES.values()) + "."
)


def _read_bytes(path):
    with open(path, "rb") as handle:
        head = handle.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: cannot decompress ({error}); the file is corrupt.") from None


def read_idx(path):
    """Parse one IDX file (gzipped or not) into a numpy array of its declared type and shape."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes is too short for an IDX header.")
    zero0, zero1, type_code, ndim = struct.unpack(">BBBB", data[:4])
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise ValueError(
            f"{path}: not an IDX file (magic bytes {data[:4].hex()}, expected 0000 then a type "
            f"byte in {sorted(hex(t) for t in _IDX_TYPES)} and a dimension count >= 1).")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated header ({len(data)} bytes, needs {header}).")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: header declares shape {shape} ({expected} data bytes) but the file holds "
            f"{len(data) - header}; the file is truncated or corrupt.")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _find(folder, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _load_idx_folder(folder):
    paths = {key: _find(folder, stem) for key, stem in FILES.items()}
    missing = [FILES[key] for key, path in paths.items() if path is None]
    if missing:
        return None, missing
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{folder}: {split} images have shape {images.shape} and labels {labels.shape}; "
                "expected (N, rows, cols) images and N labels.")
    return ((arrays["train_images"], arrays["train_labels"]),
            (arrays["test_images"], arrays["test_labels"])), []


def _load_tfds():
    try:
        import tensorflow_datasets as tfds  # optional dependency
    except ImportError:
        return None
    try:
        splits = tfds.as_numpy(tfds.load(
            "fashion_mnist", split=["train", "test"], batch_size=-1, as_supervised=True,
            download=False))
    except Exception:  # noqa: BLE001 - any tfds failure means "not available offline"
        return None
    (x_train, y_train), (x_test, y_test) = splits
    return ((np.asarray(x_train, np.uint8).reshape(-1, 28, 28), np.asarray(y_train, np.uint8)),
            (np.asarray(x_test, np.uint8).reshape(-1, 28, 28), np.asarray(y_test, np.uint8)))


def load_fashion_mnist(data_dir=None):
    """Load Fashion-MNIST offline; see the module docstring for the sources and their order.

    Args:
      data_dir: a folder with the four IDX files; when given, no other source is tried.

    Returns:
      ``((x_train, y_train), (x_test, y_test))`` as ``uint8`` numpy arrays.

    Raises:
      FileNotFoundError: no source has the data (the message says how to get it).
      ValueError: a file exists but is not a valid IDX file.
    """
    if data_dir is not None:
        data_dir = os.fspath(data_dir)
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(
                f"`data_dir` {data_dir!r} is not a folder. " + _HOW_TO_GET)
        loaded, missing = _load_idx_folder(data_dir)
        if loaded is None:
            raise FileNotFoundError(
                f"`data_dir` {data_dir!r} lacks {missing}. " + _HOW_TO_GET)
        return loaded
    loaded = _load_tfds()
    if loaded is not None:
        return loaded
    if os.path.isdir(DEBIAN_DIR):
        loaded, _ = _load_idx_folder(DEBIAN_DIR)
        if loaded is not None:
            return loaded
    raise FileNotFoundError("Fashion-MNIST not found. " + _HOW_TO_GET)

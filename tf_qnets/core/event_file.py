"""Write TensorBoard scalar event files with the standard library only.

TensorBoard reads ``events.out.tfevents.*`` files: a sequence of records, each::

    uint64 length | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

(little-endian), where ``data`` is a serialized ``Event`` protocol buffer and
``masked_crc32c(b) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 mod 2^32`` of the CRC-32C
(Castagnoli) of ``b``. The first event carries ``file_version = "brain.Event:2"``; a scalar
is an event with ``wall_time`` (field 1, double), ``step`` (field 2, int64) and a ``Summary``
(field 5) holding one ``Value`` (field 1) with ``tag`` (field 1, string) and
``simple_value`` (field 2, float). This is the format ``tf.summary`` writes; here it needs
neither TensorFlow nor protobuf, so the Keras 3 path logs under JAX too.

Example::

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with ScalarEventWriter(folder) as writer:
    ...     writer.write("temperature/conv/kernel", 10.0, step=0)
    >>> len(os.listdir(folder))
    1
"""

import os
import socket
import struct
import time

__all__ = ["ScalarEventWriter", "crc32c", "masked_crc32c", "read_scalars"]

_MASK_DELTA = 0xA282EAD8


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli) of ``data`` (bytes); ``crc32c(b"123456789") == 0xE3069283``."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    """The masked CRC TFRecord framing stores."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _varint(value):
    out = bytearray()
    value &= 0xFFFFFFFFFFFFFFFF
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number, wire_type, payload):
    return _varint((number << 3) | wire_type) + payload


def _length_delimited(number, payload):
    return _field(number, 2, _varint(len(payload)) + payload)


def _event(wall_time, step=None, file_version=None, tag=None, value=None):
    data = _field(1, 1, struct.pack("<d", wall_time))
    if step is not None:
        data += _field(2, 0, _varint(int(step)))
    if file_version is not None:
        data += _length_delimited(3, file_version.encode())
    if tag is not None:
        summary_value = _length_delimited(1, tag.encode()) + _field(2, 5, struct.pack("<f", value))
        data += _length_delimited(5, _length_delimited(1, summary_value))
    return data


def _record(data):
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", masked_crc32c(header)) + data
            + struct.pack("<I", masked_crc32c(data)))


class ScalarEventWriter:
    """Append scalars to a new event file in ``folder`` (created if needed).

    Args:
      folder: the run folder TensorBoard shows (e.g. ``<log_dir>/quantizers``).
    """

    def __init__(self, folder):
        os.makedirs(folder, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.qnets"
        self.path = os.path.join(folder, name)
        self._file = open(self.path, "wb")
        self._file.write(_record(_event(time.time(), step=0, file_version="brain.Event:2")))

    def write(self, tag, value, step):
        """Log ``value`` (a float) under ``tag`` at ``step`` (an int)."""
        self._file.write(_record(_event(time.time(), step=step, tag=tag, value=float(value))))

    def flush(self):
        self._file.flush()

    def close(self):
        if not self._file.closed:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_varint(data, position):
    value, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def _fields(data):
    position = 0
    while position < len(data):
        key, position = _read_varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _read_varint(data, position)
        elif wire_type == 1:
            value, position = data[position:position + 8], position + 8
        elif wire_type == 5:
            value, position = data[position:position + 4], position + 4
        elif wire_type == 2:
            length, position = _read_varint(data, position)
            value, position = data[position:position + length], position + length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        yield number, value


def read_scalars(path):
    """``[(tag, step, value)]`` of the ``simple_value`` scalars in an event file, checking
    every record's CRCs (the reader the tests use; TensorBoard reads the same files)."""
    with open(path, "rb") as file:
        data = file.read()
    position, found = 0, []
    while position < len(data):
        header = data[position:position + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[position + 8:position + 12])
        if header_crc != masked_crc32c(header):
            raise ValueError(f"{path}: corrupt record header at byte {position}")
        event = data[position + 12:position + 12 + length]
        (event_crc,) = struct.unpack("<I", data[position + 12 + length:position + 16 + length])
        if event_crc != masked_crc32c(event):
            raise ValueError(f"{path}: corrupt record at byte {position}")
        position += 16 + length
        fields = dict(_fields(event))
        if 5 not in fields:
            continue
        for number, value in _fields(fields[5]):
            if number != 1:
                continue
            parts = dict(_fields(value))
            found.append((parts[1].decode(), int(fields.get(2, 0)),
                          struct.unpack("<f", parts[2])[0]))
    return found

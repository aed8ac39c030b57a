"""core.event_file writes the event files TensorFlow and TensorBoard read (checked with TF's own
record reader and Event proto), without needing TensorFlow itself."""

import glob

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

from tf_qnets.core.event_file import ScalarEventWriter, crc32c, masked_crc32c, read_scalars


def test_crc32c_matches_the_castagnoli_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert masked_crc32c(b"") == 0xA282EAD8


def test_tensorflow_reads_the_scalars_back(tmp_path):
    written = [("temperature/conv/kernel", 0, 10.0), ("alpha/conv/output", 3, 0.125),
               ("beta/dense/kernel", 1 << 40, -2.5)]
    with ScalarEventWriter(str(tmp_path / "run")) as writer:
        for tag, step, value in written:
            writer.write(tag, value, step)
    (path,) = glob.glob(str(tmp_path / "run" / "events.out.tfevents.*"))
    events = [event_pb2.Event.FromString(record.numpy())
              for record in tf.data.TFRecordDataset(path)]   # checks every record's CRCs
    assert events[0].file_version == "brain.Event:2"
    got = [(e.summary.value[0].tag, e.step, e.summary.value[0].simple_value) for e in events[1:]]
    assert got == written
    assert read_scalars(path) == written
    assert all(np.isfinite(e.wall_time) and e.wall_time > 0 for e in events)


def test_a_corrupt_file_is_detected(tmp_path):
    with ScalarEventWriter(str(tmp_path)) as writer:
        writer.write("a", 1.0, 1)
    data = bytearray(open(writer.path, "rb").read())
    data[-6] ^= 0xFF
    open(writer.path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        read_scalars(writer.path)

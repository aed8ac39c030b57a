"""Run some work under the TensorFlow profiler and return what it recorded, as an ``XSpace``.

The profiler writes one ``*.xplane.pb`` per session: planes (``/host:CPU``, ...) of lines
(threads) of timed events, each with named statistics. ``benchmarks/step_profile.py`` sums
the ops' durations from it, ``benchmarks/live_tensors.py`` replays its memory events.

Example::

    space = profiled_space(lambda: [step() for _ in range(5)])
"""

import glob
import tempfile


def profiled_space(work, options=None):
    """The ``XSpace`` of one profiler session around ``work()`` (``options``: a
    ``tf.profiler.experimental.ProfilerOptions``, or None for the profiler's defaults)."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir, options=options)
        try:
            work()
        finally:
            tf.profiler.experimental.stop()
        path = sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1]
        space = xplane_pb2.XSpace()
        with open(path, "rb") as handle:
            space.ParseFromString(handle.read())
    return space

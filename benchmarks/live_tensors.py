"""The peak bytes of the tensors a training step holds at once, replayed from the profiler.

``tf.config.experimental.get_memory_info("CPU:0")["peak"]`` (with the BFC allocator on the
CPU, ``TF_CPU_ALLOCATOR_USE_BFC=true``) is the allocator's peak of *chunk* bytes in use. A
chunk is at least the tensor's size rounded up, and larger where BFC handed out a free chunk
without splitting it (it splits one only when the chunk is at least twice the request). How
much that adds depends on which chunks happen to be free when a tensor is allocated, that is,
on the order in which the executor's two threads ran the step's ops: the same step's
allocator peak moves by 10-20% from process to process, and two models' ratio with it.

This module measures what the step itself needs. The profiler records one
``MemoryAllocation`` / ``MemoryDeallocation`` event per chunk, with the bytes the tensor
asked for (``requested_bytes``), the op and the shape. Replaying them in time order,

    live(t) = sum of requested_bytes over the tensors allocated and not yet freed at t,

and the step's peak is ``held + max_t live(t)``: ``held`` is what was in use when the step
began (the weights, the optimizer's slots, the input pipeline's buffers; the allocator's own
count of it). ``tensors_at_peak`` lists what was alive then: which tensors a quantized
model keeps beyond the float one.

Example (a warmed-up training step, as ``benchmarks/train_speed.py`` runs it)::

    peaks = profile_live_tensors(step, steps=5)
    median_peak_mib = statistics.median(p.peak_bytes for p in peaks) / 2**20
"""

import dataclasses

from profiler_space import profiled_space


@dataclasses.dataclass(frozen=True)
class LiveTensor:
    """One tensor alive at a step's peak."""
    requested_bytes: int
    op: str          # the op that allocated it ("?" for an XLA executable's buffer)
    shape: str


@dataclasses.dataclass(frozen=True)
class StepPeak:
    """One profiled step: ``peak_bytes = held_bytes + max live(t)``."""
    peak_bytes: int
    held_bytes: int
    tensors_at_peak: tuple

    def largest(self, count=8):
        """The ``count`` largest tensors alive at the peak, largest first."""
        return sorted(self.tensors_at_peak, key=lambda t: -t.requested_bytes)[:count]


def _stat_values(plane, event):
    """``{stat name: value}`` of one profiler event."""
    values = {}
    for stat in event.stats:
        name = plane.stat_metadata[stat.metadata_id].name
        kind = stat.WhichOneof("value")
        value = getattr(stat, kind) if kind else None
        if kind == "ref_value":
            value = plane.stat_metadata[value].name
        values[name] = value
    return values


def allocation_events(space):
    """``[(time_ps, is_allocation, stats)]`` of an ``XSpace``'s memory events, in time order."""
    events = []
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name in ("MemoryAllocation", "MemoryDeallocation"):
                    time_ps = line.timestamp_ns * 1000 + event.offset_ps
                    events.append((time_ps, name == "MemoryAllocation",
                                   _stat_values(plane, event)))
    events.sort(key=lambda e: e[0])
    return events


def live_tensor_peak(events, held_bytes=0):
    """The :class:`StepPeak` of one window of :func:`allocation_events`.

    A chunk freed in the window but allocated before it (``held``, already counted) is
    skipped, so ``live(t)`` counts only what the window allocated."""
    live, current, peak, at_peak = {}, 0, 0, {}
    for _, is_allocation, stats in events:
        address = stats.get("addr")
        if is_allocation:
            live[address] = stats
            current += int(stats.get("requested_bytes") or 0)
        elif address in live:
            current -= int(live.pop(address).get("requested_bytes") or 0)
        if current > peak:
            peak, at_peak = current, dict(live)
    tensors = tuple(LiveTensor(int(s.get("requested_bytes") or 0), s.get("tf_op") or "?",
                               s.get("shape") or "?") for s in at_peak.values())
    return StepPeak(held_bytes + peak, held_bytes, tensors)


def profile_live_tensors(step, steps=5, device="CPU:0"):
    """One :class:`StepPeak` per call of ``step`` (warmed up), each in its own profiler
    session, with TensorFlow's allocator counting bytes in use on ``device``."""
    import tensorflow as tf

    options = tf.profiler.experimental.ProfilerOptions(
        host_tracer_level=2, python_tracer_level=0, device_tracer_level=0)
    try:
        tf.config.experimental.get_memory_info(device)
    except ValueError as error:
        raise RuntimeError(
            f"{device} keeps no allocator statistics: set TF_CPU_ALLOCATOR_USE_BFC=true "
            "before TensorFlow starts (benchmarks/train_speed.py's memory runs do)") from error
    peaks = []
    for _ in range(steps):
        held = tf.config.experimental.get_memory_info(device)["current"]
        space = profiled_space(step, options)
        peaks.append(live_tensor_peak(allocation_events(space), held))
    return peaks

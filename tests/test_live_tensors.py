"""benchmarks/live_tensors.py: the replay of the profiler's allocation events."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import live_tensors  # noqa: E402


def _event(is_allocation, address, size=0, op="op"):
    return (0, is_allocation, {"addr": address, "requested_bytes": size, "tf_op": op,
                               "shape": f"[{size}]"})


def test_peak_is_the_largest_sum_of_tensors_alive_at_once_plus_what_was_held():
    events = [_event(True, 1, 100, "a"), _event(True, 2, 50, "b"), _event(False, 1),
              _event(True, 3, 80, "c"), _event(False, 9),   # 9: allocated before the window
              _event(False, 2), _event(False, 3)]
    peak = live_tensors.live_tensor_peak(events, held_bytes=1000)
    assert peak.peak_bytes == 1000 + 150 and peak.held_bytes == 1000
    assert [t.op for t in peak.largest()] == ["a", "b"]
    assert live_tensors.live_tensor_peak([], held_bytes=7).peak_bytes == 7


def test_a_profiled_step_reports_its_own_tensors(tmp_path):
    """A step that holds one 4 MiB tensor beside a held 4 MiB input: the replay finds it
    (a fresh process: the BFC allocator must be chosen before TensorFlow starts)."""
    script = tmp_path / "step.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.join(ROOT, "benchmarks")!r})
        import tensorflow as tf
        import live_tensors
        f = tf.function(lambda x: tf.reduce_sum(tf.sqrt(x * 2.0) + 1.0))
        x = tf.random.uniform([1024, 1024])
        f(x)
        for p in live_tensors.profile_live_tensors(lambda: f(x).numpy(), steps=2):
            print("PEAK", p.peak_bytes - p.held_bytes, p.held_bytes >= 4 << 20,
                  p.largest(1)[0].requested_bytes, p.largest(1)[0].shape)
    """))
    env = dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC="true", TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=300)
    lines = [line.split() for line in out.stdout.splitlines() if line.startswith("PEAK")]
    assert len(lines) == 2, out.stderr[-2000:]
    for _, step_bytes, held, largest, shape in lines:
        assert 4 << 20 <= int(step_bytes) < (4 << 20) + 4096
        assert held == "True" and int(largest) == 4 << 20 and shape == "[1024,1024]"

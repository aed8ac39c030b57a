"""benchmarks/gpu_check.sh: the prepared GPU check, run here on the CPU with a tiny setting.

It must run where JAX is installed and TensorFlow is not: the runs below block the
``tensorflow`` and ``tf_keras`` imports (a ``sitecustomize`` on ``PYTHONPATH``).
"""

import gzip
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BLOCKER = """
import importlib.abc, os, sys

BLOCKED = {"tensorflow", "tf_keras"} | ({"keras"} if os.environ.get("QNETS_BLOCK_KERAS") else set())

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the GPU check must not need it")
        return None

sys.meta_path.insert(0, Blocked())
"""


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                        *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu_check")
    data = folder / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for stem, count in (("train", 512), ("t10k", 256)):
        labels = rng.integers(0, 10, count)
        images = rng.integers(0, 60, (count, 28, 28)) + (labels * 19)[:, None, None]
        _write_idx(data / f"{stem}-images-idx3-ubyte.gz", images)
        _write_idx(data / f"{stem}-labels-idx1-ubyte.gz", labels)
    site = folder / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([str(site)] + [p for p in [os.environ.get("PYTHONPATH")]
                                                         if p]))
    env.pop("TF_USE_LEGACY_KERAS", None)
    env.pop("KERAS_BACKEND", None)
    return folder, data, env


def test_tiny_run_prints_step_times_ratios_and_accuracies_without_tensorflow(setting):
    pytest.importorskip("jax")
    folder, data, env = setting
    result = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--tiny", "--data-dir", str(data),
         "--json", str(folder / "result.json")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "JAX" in output and "data: 512 train, 256 test images" in output
    for name in ("float", "W3A2", "W3A3", "W3A8"):
        assert f"| {name} | " in output
    assert "- W3A3 / float = " in output and "(target <= 1.3)" in output
    assert "- W3A8 / W3A2 = " in output and "(target <= 1.1)" in output
    assert "W3A3 hard test accuracy after a 1-epoch fine-tune (plain evaluate)" in output
    result = json.loads((folder / "result.json").read_text())
    assert sorted(result["seconds"]) == ["W3A2", "W3A3", "W3A8", "float"]
    assert all(value > 0 for value in result["seconds"].values())
    assert 0.0 <= result["w3a3_accuracy"] <= 1.0 and 0.0 <= result["float_accuracy"] <= 1.0


def test_without_keras_or_wheels_it_says_how_to_prepare(setting, tmp_path):
    _, data, env = setting
    env = dict(env, QNETS_BLOCK_KERAS="1", QNETS_WHEELS=str(tmp_path))
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--tiny", "--data-dir", str(data)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "keras is not installed" in result.stderr and "gpu_check_prepare.sh" in result.stderr

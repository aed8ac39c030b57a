"""benchmarks/keras3_train_speed.py measures real fit epochs under the active backend."""

import os
import sys

import keras

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "benchmarks"))

import keras3_train_speed as bench  # noqa: E402

from tf_qnets.keras3 import get_temperatures  # noqa: E402


def test_a_tiny_run_times_every_configuration_and_quantizes_the_quantized_ones(monkeypatch):
    built = {}
    original = bench.build

    def recording(name, temperature, calibration):
        built[name] = original(name, temperature, calibration)
        return built[name]

    monkeypatch.setattr(bench, "build", recording)
    lines = []
    batches = {}
    medians = bench.measure(["float", "W2A2"], rounds=1, steps=2, batch=4, temperature=10.0,
                            log=lines.append, batch_times=batches)
    assert set(medians) == {"float", "W2A2"} and all(v > 0 for v in medians.values())
    # one timed epoch of two batches each, every batch shorter than its whole epoch
    assert {name: len(v) for name, v in batches.items()} == {"float": 2, "W2A2": 2}
    assert all(0 < b < 2 * medians[name] for name, v in batches.items() for b in v)
    assert any("warmed up W2A2" in line for line in lines) and lines[-1] == "  round 1/1"
    wrappers = [layer for layer in built["W2A2"].layers if type(layer).__name__ == "QNetsWrapper"]
    assert len(wrappers) >= 3 and not any(type(layer).__name__ == "QNetsWrapper"
                                          for layer in built["float"].layers)
    temperatures = get_temperatures(built["W2A2"])
    assert any("output" in name for name in temperatures) and set(temperatures.values()) == {10.0}
    assert keras.backend.backend() in bench.BACKENDS

"""MultiWorkerMirroredStrategy: two worker processes on localhost train one model.

The test starts both workers (``TF_CONFIG`` with ports found by binding port 0), bounds
them in time and kills them itself. Worker 1 calibrates on *other* data than the chief:
``quantize_model`` must still give every replica the chief's initialisation. The trained
result is compared with a one-replica run of the same scenario in this process.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

WORKERS = pathlib.Path(__file__).resolve().parent / "_workers"
sys.path.insert(0, str(WORKERS))

import scenario  # noqa: E402

from tf_qnets.keras2.backend import tf  # noqa: E402

TIMEOUT_S = 900  # a bound for a loaded 2-core machine, not the expected time
# Two processes all-reduce the same gradients as one; only the summation order differs.
WEIGHT_ATOL = 1e-6


def free_ports(count):
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("localhost", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def run_workers(tmp_path, extra_flags):
    """Start both workers, wait for both (bounded), kill whatever is left; return their JSON."""
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    processes, outputs, logs = [], [], []
    try:
        for index in range(2):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1",
                       TF_CONFIG=json.dumps({"cluster": cluster,
                                             "task": {"type": "worker", "index": index}}))
            out = tmp_path / f"worker{index}.json"
            log = open(tmp_path / f"worker{index}.log", "w")
            logs.append(log)
            outputs.append(out)
            processes.append(subprocess.Popen(
                [sys.executable, str(WORKERS / "multiworker_worker.py"), str(out), str(tmp_path),
                 *extra_flags[index]], env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + TIMEOUT_S
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
    for index, (process, out) in enumerate(zip(processes, outputs)):
        if process.returncode != 0 or not out.exists():
            tail = (tmp_path / f"worker{index}.log").read_text()[-3000:]
            pytest.fail(f"worker {index} exited with {process.returncode}:\n{tail}")
    return [json.loads(out.read_text()) for out in outputs]


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("multiworker")
    return run_workers(tmp_path, [[], ["--skewed-calibration"]]), tmp_path


@pytest.fixture(scope="module")
def one_replica():
    """The same scenario trained in this process with the default strategy."""
    x, y = scenario.make_data()
    qat = scenario.quantize(scenario.build_float_model(), x)
    scenario.compile_model(qat)
    init = scenario.snapshot(scenario.quantizer_variables(qat))
    qat.fit(scenario.train_dataset(x, y), epochs=scenario.EPOCHS, verbose=0,
            callbacks=[scenario.tf_qnets.TemperatureScheduler(base=scenario.TEMPERATURE_BASE)])
    return {"after_init": init,
            "after_fit": scenario.snapshot(scenario.quantizer_variables(qat)),
            "weights": scenario.snapshot(scenario.trained_variables(qat))}


def _only_value(values):
    assert len(values) == 1, "one replica per worker"
    return np.asarray(values[0])


def test_two_workers_form_one_strategy_with_two_replicas(workers):
    results, _ = workers
    assert [r["replicas"] for r in results] == [2, 2]
    assert [r["task"]["index"] for r in results] == [0, 1]


def test_whole_model_xla_is_reported_unsupported_on_cpu_workers(workers):
    """Measured with ``--jit-compile``: "Collectives are not yet implemented for CPU devices
    when compiling with XLA", then the worker aborts; the library must say False."""
    assert [r["jit_compile_supported"] for r in workers[0]] == [False, False]


def test_every_replica_starts_from_the_chiefs_initialisation(workers, one_replica):
    """Worker 1 calibrated on other data; after quantize_model it holds the chief's values."""
    results, _ = workers
    for name, expected in one_replica["after_init"].items():
        for result in results:
            np.testing.assert_array_equal(
                _only_value(result["after_init"][name]), np.asarray(expected[0]), err_msg=name)


def test_workers_end_with_identical_quantizers_and_weights(workers):
    first, second = workers[0]
    for group in ("after_fit", "weights"):
        for name in first[group]:
            np.testing.assert_array_equal(
                _only_value(first[group][name]), _only_value(second[group][name]), err_msg=name)


def test_two_workers_train_the_same_model_as_one_replica(workers, one_replica):
    chief = workers[0][0]
    assert chief["history_temperature"] == [5.0, 10.0]
    for name, expected in one_replica["after_fit"].items():
        got = _only_value(chief["after_fit"][name])
        if name.endswith(("temperature", "thresholds")):
            np.testing.assert_array_equal(got, np.asarray(expected[0]), err_msg=name)
        else:
            np.testing.assert_allclose(got, np.asarray(expected[0]), rtol=1e-5, atol=1e-6,
                                       err_msg=name)
    for name, expected in one_replica["weights"].items():
        np.testing.assert_allclose(_only_value(chief["weights"][name]), np.asarray(expected[0]),
                                   rtol=0, atol=WEIGHT_ATOL, err_msg=name)


def test_the_chiefs_saved_model_loads_with_the_trained_weights(workers):
    import tf_qnets

    chief, tmp_path = workers[0][0], workers[1]
    restored = tf_qnets.load_model(str(tmp_path / "model.keras"), compile=False)
    for name, variable in scenario.trained_variables(restored).items():
        np.testing.assert_array_equal(variable.numpy(), _only_value(chief["weights"][name]),
                                      err_msg=name)
    assert tf.distribute.get_strategy().num_replicas_in_sync == 1

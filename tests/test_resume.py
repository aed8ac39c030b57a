"""Fault tolerance: a training process killed mid-epoch resumes with BackupAndRestore.

Each run is a real process (tests/_workers/resume_worker.py): deterministic
(``set_random_seed``, ``enable_op_determinism``, no shuffling). The interrupted runs stop
inside epoch 2 at global step 6 (of 8) and are killed by this test with SIGKILL, then
started again with the same backup folder.

* ``save_freq="epoch"``: the restart resumes from the end of epoch 1 and ends bit-identical
  to the uninterrupted run (T, alpha, beta, thresholds, weights, optimizer state).
* ``save_freq=1`` (every step): the restart restores exactly the state after step 6 and
  continues with step 7 of the schedule. tf_keras 2.21, however, restarts the epoch's data
  iterator from its first batch while the step counter continues, so the remaining steps of
  that epoch see other batches than an uninterrupted run would: what is exact there is the
  restored state, which the test checks.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

WORKER = pathlib.Path(__file__).resolve().parent / "_workers" / "resume_worker.py"
TIMEOUT_S = 900  # per wave; a bound for a loaded 2-core machine, not the expected time
KILL_AT_STEP = 6
STEPS_PER_EPOCH = 4


def _start(tmp_path, name, save_freq, *flags):
    out = tmp_path / f"{name}.json"
    log = open(tmp_path / f"{name}.log", "w")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    process = subprocess.Popen(
        [sys.executable, str(WORKER), str(out), str(tmp_path / f"{name}_backup"), save_freq,
         *flags], env=env, stdout=log, stderr=subprocess.STDOUT)
    process.out, process.log, process.name = out, log, name
    return process


def _wait(processes, tmp_path, kill_when_hanging=False):
    """Wait for every process (bounded); kill on timeout; SIGKILL those that hang on purpose."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        pending = list(processes)
        while pending and time.monotonic() < deadline:
            for process in list(pending):
                hanging = pathlib.Path(str(process.out) + ".hanging")
                if kill_when_hanging and hanging.exists() and process.poll() is None:
                    os.kill(process.pid, signal.SIGKILL)
                if process.poll() is not None:
                    pending.remove(process)
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
            process.log.close()
    for process in processes:
        expected = -signal.SIGKILL if kill_when_hanging else 0
        if process.returncode != expected:
            tail = (tmp_path / f"{process.name}.log").read_text()[-3000:]
            pytest.fail(f"{process.name} exited with {process.returncode}, "
                        f"expected {expected}:\n{tail}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("resume")
    # Wave 1: the uninterrupted run (with a per-step trace) and the two runs killed mid-epoch.
    reference = _start(tmp_path, "reference", "epoch", "--trace")
    per_epoch = _start(tmp_path, "per_epoch", "epoch", "--hang-at-step", str(KILL_AT_STEP))
    per_step = _start(tmp_path, "per_step", "1", "--hang-at-step", str(KILL_AT_STEP))
    _wait([per_epoch, per_step], tmp_path, kill_when_hanging=True)
    killed = {p.name: pathlib.Path(str(p.out) + ".hanging").exists() for p in (per_epoch, per_step)}
    # Wave 2: the same commands again, without the hang: they resume from the backups.
    resumed_epoch = _start(tmp_path, "per_epoch", "epoch")
    resumed_step = _start(tmp_path, "per_step", "1")
    _wait([reference, resumed_epoch, resumed_step], tmp_path)
    load = lambda process: json.loads(process.out.read_text())  # noqa: E731
    return {"reference": load(reference), "per_epoch": load(resumed_epoch),
            "per_step": load(resumed_step), "killed": killed}


def _assert_states_equal(got, expected):
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(expected[name]),
                                      err_msg=name)


def test_the_interrupted_runs_were_killed_mid_epoch(runs):
    assert runs["killed"] == {"per_epoch": True, "per_step": True}
    assert KILL_AT_STEP % STEPS_PER_EPOCH != 0


def test_uninterrupted_reference_follows_the_schedule(runs):
    reference = runs["reference"]
    assert reference["history_temperature"] == [5.0, 10.0]
    assert sorted(int(step) for step in reference["trace"]) == list(range(1, 9))
    temperatures = [v for k, v in reference["final"].items() if k.endswith("/temperature")]
    assert temperatures and all(t == 10.0 for t in temperatures)


def test_epoch_backup_resumes_at_the_start_of_the_interrupted_epoch(runs):
    resumed = runs["per_epoch"]
    assert resumed["first_batch"] == [1, 0]
    _assert_states_equal(resumed["at_start"], runs["reference"]["trace"][str(STEPS_PER_EPOCH)])


def test_epoch_backup_resume_ends_identical_to_the_uninterrupted_run(runs):
    resumed = runs["per_epoch"]
    assert resumed["history_temperature"] == [10.0]
    _assert_states_equal(resumed["final"], runs["reference"]["final"])


def test_step_backup_restores_the_exact_state_after_the_last_step(runs):
    """T, alpha, beta, thresholds, weights and the optimizer (iterations, momentum) of step 6."""
    resumed = runs["per_step"]
    assert resumed["first_batch"] == [1, KILL_AT_STEP - STEPS_PER_EPOCH]
    _assert_states_equal(resumed["at_start"], runs["reference"]["trace"][str(KILL_AT_STEP)])
    assert resumed["at_start"]["opt00"] == KILL_AT_STEP  # the optimizer's iteration count


def test_step_backup_resume_finishes_the_schedule(runs):
    resumed = runs["per_step"]
    assert resumed["history_temperature"] == [10.0]
    assert resumed["final"]["opt00"] == 2 * STEPS_PER_EPOCH
    for name, value in resumed["final"].items():
        if name.endswith(("/temperature", "/thresholds")):
            assert value == runs["reference"]["final"][name], name

"""A deterministic training run with BackupAndRestore that the test can kill and restart.

Run by tests/test_resume.py::

    python resume_worker.py OUT.json BACKUP_DIR SAVE_FREQ [--hang-at-step S] [--trace]

``SAVE_FREQ`` is ``epoch`` or a number of steps (BackupAndRestore's ``save_freq``).
``--hang-at-step S``: after global step ``S`` (and after BackupAndRestore handled it),
write ``OUT.json.hanging`` and sleep, so that the test can SIGKILL a live process at a
known point. ``--trace`` records the full state after every step. OUT.json holds the
state when training starts (after any restore), the first (epoch, batch) run, and the
final state: temperatures, alpha, beta, thresholds, weights and the optimizer's variables.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scenario  # noqa: E402  (sets TF_CPP_MIN_LOG_LEVEL, imports tf_qnets first)
from scenario import keras, tf  # noqa: E402

import tf_qnets  # noqa: E402


def full_state(model):
    variables = {}
    variables.update(scenario.quantizer_variables(model))
    variables.update(scenario.trained_variables(model))
    variables.update(scenario.optimizer_variables(model))
    return {name: values[0] for name, values in scenario.snapshot(variables).items()}


class Recorder(keras.callbacks.Callback):
    """Records the state at train begin, after each step (optional), and where it started."""

    def __init__(self, out_path, hang_at_step, trace):
        super().__init__()
        self.out_path = out_path
        self.hang_at_step = hang_at_step
        self.trace = trace
        self.record = {"trace": {}, "first_batch": None}
        self._epoch = None

    def on_train_begin(self, logs=None):
        self.record["at_start"] = full_state(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.record["first_batch"] is None:
            self.record["first_batch"] = [int(self._epoch), int(batch)]

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if self.trace:
            self.record["trace"][str(step)] = full_state(self.model)
        if step == self.hang_at_step:
            scenario.write_json(self.out_path + ".hanging", {"step": step})
            while True:  # the test kills this process now
                time.sleep(1.0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("backup_dir")
    parser.add_argument("save_freq")
    parser.add_argument("--hang-at-step", type=int, default=None)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    save_freq = args.save_freq if args.save_freq == "epoch" else int(args.save_freq)

    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    x, y = scenario.make_data()
    qat = scenario.quantize(scenario.build_float_model(), x)
    scenario.compile_model(qat)
    recorder = Recorder(args.out, args.hang_at_step, args.trace)
    history = qat.fit(
        scenario.train_dataset(x, y), epochs=scenario.EPOCHS, verbose=0,
        callbacks=[
            # Order matters: restore first, then set T for the epoch, then record.
            keras.callbacks.BackupAndRestore(args.backup_dir, save_freq=save_freq),
            tf_qnets.TemperatureScheduler(base=scenario.TEMPERATURE_BASE),
            recorder,
        ])
    recorder.record["history_temperature"] = history.history["temperature"]
    recorder.record["final"] = full_state(qat)
    scenario.write_json(args.out, recorder.record)


if __name__ == "__main__":
    main()

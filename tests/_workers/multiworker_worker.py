"""One worker of a MultiWorkerMirroredStrategy run on localhost; its results as JSON.

Run by tests/test_multiworker.py, once per worker, with ``TF_CONFIG`` set::

    python multiworker_worker.py OUT.json WORKDIR [--skewed-calibration] [--jit-compile]

``--skewed-calibration`` makes this worker calibrate on other data than the chief:
``quantize_model`` must still leave every replica with the chief's initialisation.
Every worker runs the same program (collectives need that); only the chief writes the
model to ``WORKDIR/model.keras``, the others to a scratch file, as Keras recommends.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scenario  # noqa: E402  (sets TF_CPP_MIN_LOG_LEVEL, imports tf_qnets first)
from scenario import tf  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.tf.distribute import jit_compile_supported  # noqa: E402


def main(out_path, workdir, skewed, jit_compile):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    tf.config.experimental.enable_op_determinism()
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    start = time.time()
    x, y = scenario.make_data()
    calibration = x[::-1] * 3.0 + 1.0 if skewed else x
    float_model = scenario.build_float_model()
    result = {"task": task, "replicas": strategy.num_replicas_in_sync,
              "jit_compile_supported": jit_compile_supported(strategy)}
    with strategy.scope():
        qat = scenario.quantize(float_model, calibration)
        scenario.compile_model(qat, jit_compile=jit_compile)
    result["after_init"] = scenario.snapshot(scenario.quantizer_variables(qat), strategy)
    history = qat.fit(scenario.train_dataset(x, y), epochs=scenario.EPOCHS, verbose=0,
                      callbacks=[tf_qnets.TemperatureScheduler(base=scenario.TEMPERATURE_BASE)])
    result["history_temperature"] = history.history["temperature"]
    result["after_fit"] = scenario.snapshot(scenario.quantizer_variables(qat), strategy)
    result["weights"] = scenario.snapshot(scenario.trained_variables(qat), strategy)
    eval_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(scenario.GLOBAL_BATCH)
    result["evaluate_loss"] = float(qat.evaluate(eval_ds, verbose=0))
    chief = task["type"] == "worker" and task["index"] == 0
    path = os.path.join(workdir, "model.keras" if chief else f"scratch_{task['index']}.keras")
    qat.save(path)
    result["saved"] = path
    result["seconds"] = time.time() - start
    scenario.write_json(out_path, result)


if __name__ == "__main__":
    flags = set(sys.argv[3:])
    unknown = flags - {"--skewed-calibration", "--jit-compile"}
    if unknown:
        sys.exit(f"unknown flags {sorted(unknown)}")
    main(sys.argv[1], sys.argv[2], "--skewed-calibration" in flags, "--jit-compile" in flags)

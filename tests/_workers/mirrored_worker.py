"""MirroredStrategy on two logical CPU devices, against one replica; results as JSON.

Run by tests/test_distribute.py as ``python mirrored_worker.py OUT.json WORKDIR``. The
logical devices must be configured before TensorFlow initialises, hence a fresh process.

Records: quantizer variables per replica right after ``quantize_model`` and after ``fit``,
the same for a one-replica run (default strategy), evaluation losses, predictions of the
model reloaded from ``.keras`` and SavedModel files, and whether whole-model
``jit_compile=True`` trains under the strategy (float and quantized models).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scenario  # noqa: E402  (sets TF_CPP_MIN_LOG_LEVEL, imports tf_qnets first)
from scenario import tf  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.tf.distribute import jit_compile_supported  # noqa: E402


def jit_trains(strategy, build, x, y):
    """``(True, "")`` if a jit_compile=True model trains one step under ``strategy``."""
    try:
        with strategy.scope():
            model = build()
            scenario.compile_model(model, jit_compile=True)
        model.fit(x[:scenario.GLOBAL_BATCH], y[:scenario.GLOBAL_BATCH],
                  batch_size=scenario.GLOBAL_BATCH, epochs=1, verbose=0, shuffle=False)
        return True, ""
    except Exception as error:  # noqa: BLE001 - the message is what we report
        lines = [line for line in str(error).splitlines() if line.strip()]
        return False, f"{type(error).__name__}: {' '.join(lines[-2:])[:300]}"


def run(strategy, float_model, x, y, record, workdir=None):
    """quantize_model + fit (TemperatureScheduler) + evaluate under ``strategy``."""
    with strategy.scope():
        qat = scenario.quantize(float_model, x)
        scenario.compile_model(qat)
    record["after_init"] = scenario.snapshot(scenario.quantizer_variables(qat), strategy)
    record["implementations"] = sorted({q.implementation for _, _, _, q, _ in
                                        tf_qnets.quantizer_states(qat)})
    history = qat.fit(scenario.train_dataset(x, y), epochs=scenario.EPOCHS, verbose=0,
                      callbacks=[tf_qnets.TemperatureScheduler(base=scenario.TEMPERATURE_BASE)])
    record["history_temperature"] = history.history["temperature"]
    record["history_gap"] = history.history["quant_gap"]
    record["after_fit"] = scenario.snapshot(scenario.quantizer_variables(qat), strategy)
    record["weights"] = scenario.snapshot(scenario.trained_variables(qat), strategy)
    record["evaluate_loss"] = float(qat.evaluate(x, y, batch_size=scenario.GLOBAL_BATCH, verbose=0))
    predictions = qat.predict(x, batch_size=scenario.GLOBAL_BATCH, verbose=0)
    record["predictions"] = predictions.tolist()
    if workdir is not None:
        keras_path = os.path.join(workdir, "mirrored.keras")
        saved_path = os.path.join(workdir, "mirrored_savedmodel")
        qat.save(keras_path)
        qat.save(saved_path, save_format="tf")
        record["saved"] = {keras_path: None, saved_path: None}
    return qat


def main(out_path, workdir):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    tf.config.experimental.enable_op_determinism()
    start = time.time()
    x, y = scenario.make_data()
    float_model = scenario.build_float_model()
    result = {}

    one = {}
    run(tf.distribute.get_strategy(), float_model, x, y, one)
    result["one_replica"] = one

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    two = {"replicas": mirrored.num_replicas_in_sync}
    run(mirrored, float_model, x, y, two, workdir)
    # Reload outside the strategy; predictions must match the trained model's.
    for path in list(two["saved"]):
        restored = tf_qnets.load_model(path, compile=False)
        two["saved"][path] = restored.predict(x, batch_size=scenario.GLOBAL_BATCH,
                                              verbose=0).tolist()
    result["two_replicas"] = two

    float_ok, float_error = jit_trains(mirrored, lambda: scenario.build_float_model(), x, y)
    qnets_ok, qnets_error = jit_trains(
        mirrored, lambda: scenario.quantize(scenario.build_float_model(), x), x, y)
    result["jit"] = {
        "float_ok": float_ok, "float_error": float_error,
        "qnets_ok": qnets_ok, "qnets_error": qnets_error,
        "supported_says": jit_compile_supported(mirrored),
        "supported_default_says": jit_compile_supported(tf.distribute.get_strategy()),
    }
    result["seconds"] = time.time() - start
    scenario.write_json(out_path, result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

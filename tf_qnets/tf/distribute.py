"""Quantization Networks under ``tf.distribute``: one model, identical on every replica.

Under a strategy, every variable of a model built in ``strategy.scope()`` is a
``MirroredVariable``: one copy per replica (device), kept equal by all-reducing the
gradients. ``tf_qnets.quantize_model`` sets variables *after* creating them (the float
weights, then ``alpha``, ``beta`` and the thresholds from calibration data). Within one
machine that writes every copy; across machines (``MultiWorkerMirroredStrategy``) each
worker writes only its own copies, so workers that calibrated on different data, or
started from different float weights, would silently train different models.
:func:`broadcast_from_first_replica` (called by ``quantize_model`` under any strategy)
makes every copy equal to replica 0's, by one all-reduce::

    v_r  <-  sum_k [k = 0] * v_k        for every replica r

:func:`replica_values` reads each replica's copy, to check that they agree.

Whole-model XLA (``compile(jit_compile=True)``) under a ``MirroredStrategy`` with several
CPU devices, or a ``MultiWorkerMirroredStrategy`` on CPUs, fails inside TensorFlow 2.21,
for float models too; :func:`jit_compile_supported` says when to leave it off. The
quantizer's own XLA kernels (``implementation="xla"``, the default) work there.

Example::

    strategy = tf.distribute.MirroredStrategy()
    with strategy.scope():
        qat = tf_qnets.quantize_model(float_model, w_bits=3, a_bits=3, calibration_data=ds.take(8))
        qat.compile("sgd", loss, jit_compile=tf_qnets.jit_compile_supported(strategy))
    qat.fit(ds, epochs=2, callbacks=[tf_qnets.TemperatureScheduler(base=5)])
    tf_qnets.replica_values(qat.weights[-1], strategy)   # one value per replica
"""

import os

import tensorflow as tf

__all__ = ["broadcast_from_first_replica", "is_chief", "jit_compile_supported", "replica_values",
           "strategy_from_name", "STRATEGY_NAMES"]

STRATEGY_NAMES = ("one", "mirrored", "multiworker")


def _strategy_of(strategy):
    if strategy is None:
        return tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(
            f"`strategy` must be a tf.distribute.Strategy or None (the current one), "
            f"got {type(strategy).__name__}.")
    return strategy


def replica_values(variable, strategy=None):
    """Each local replica's value of ``variable`` as a list of NumPy arrays.

    A plain (non-distributed) variable gives a one-element list.
    """
    strategy = _strategy_of(strategy)
    return [value.numpy() for value in strategy.experimental_local_results(variable)]


def _model_variables(model_or_variables):
    if hasattr(model_or_variables, "weights"):
        return list(model_or_variables.weights)
    variables = list(model_or_variables)
    for variable in variables:
        if not isinstance(variable, tf.Variable):
            raise TypeError(
                "`model_or_variables` must be a Keras model or a list of tf.Variable, "
                f"got an element of type {type(variable).__name__}.")
    return variables


def broadcast_from_first_replica(model_or_variables, strategy=None):
    """Give every replica replica 0's value of each float variable (a model's: its weights).

    A no-op with a single replica. Under ``MultiWorkerMirroredStrategy`` this is a
    collective operation: every worker must call it, in the same order (as
    ``quantize_model`` does when every worker runs the same program).
    """
    strategy = _strategy_of(strategy)
    # Integer variables (tfmot's step counters) live in host memory and are never set
    # after creation; the all-reduce takes only the floating-point ones.
    variables = [v for v in _model_variables(model_or_variables) if v.dtype.is_floating]
    if strategy.num_replicas_in_sync <= 1 or not variables:
        return

    def first_or_zeros(variable):
        copies = strategy.experimental_local_results(variable)

        def value(context):
            # Local replicas hold consecutive ids, so this replica's copy is at id % count.
            replica = context.replica_id_in_sync_group
            own = copies[replica % len(copies)]
            return tf.identity(own) if replica == 0 else tf.zeros_like(own)

        return strategy.experimental_distribute_values_from_function(value)

    with strategy.scope():
        summed = strategy.extended.batch_reduce_to(
            tf.distribute.ReduceOp.SUM, [(first_or_zeros(v), v) for v in variables])
    for variable, result in zip(variables, summed):
        for copy, value in zip(strategy.experimental_local_results(variable),
                               strategy.experimental_local_results(result)):
            copy.assign(value)


def jit_compile_supported(strategy=None):
    """Whether ``model.compile(jit_compile=True)`` trains under ``strategy`` (TF 2.21, CPU).

    Measured on CPU: whole-model XLA works without a strategy and with one device, and fails
    inside TensorFlow for float models too under ``MirroredStrategy`` with several CPU
    devices ("Trying to access resource ... located in device CPU:1 from device CPU:0") and
    under ``MultiWorkerMirroredStrategy`` on CPUs ("Collectives are not yet implemented for
    CPU devices when compiling with XLA"). So: False for a multi-worker strategy or several
    replicas on CPU devices, True otherwise (GPU strategies were not measured and are
    assumed to work). The quantizer's own XLA kernels work in every case.
    """
    strategy = _strategy_of(strategy)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if strategy.num_replicas_in_sync <= 1 and not multi_worker:
        return True
    devices = strategy.extended.worker_devices
    return not any(
        (tf.DeviceSpec.from_string(d).device_type or "").upper() == "CPU" for d in devices)


def strategy_from_name(name):
    """``"one"`` (the default strategy), ``"mirrored"`` (every local GPU) or ``"multiworker"``.

    Create it before any other TensorFlow work. ``"multiworker"`` needs the ``TF_CONFIG``
    environment variable (the cluster and this task).
    """
    if name not in STRATEGY_NAMES:
        raise ValueError(f"`strategy` must be one of {STRATEGY_NAMES}, got {name!r}.")
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("`strategy`='multiworker' needs TF_CONFIG (the cluster and this task).")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy=None):
    """True on the one task that writes files: without a cluster, the chief, or worker 0."""
    resolver = getattr(_strategy_of(strategy), "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().jobs)

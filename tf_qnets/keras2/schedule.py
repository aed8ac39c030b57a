"""``TemperatureScheduler``: anneal the soft staircase into the hard one during training.

Default schedule (the authors' release): ``T = base * (epoch + 1)`` for epoch 0, 1, ...
(the paper writes ``T = base * epoch``; base 10 for AlexNet, 5 for ResNet, over 55+
epochs). ``base="auto"`` (the default) takes ``base = max(10, 100 / epochs)`` from the
``epochs`` given to ``fit``: the paper's 10 for long schedules, and for short fine-tunes a
base that still ends at ``T = 100``. From ``T = 100`` on (``HARD_FORWARD_TEMPERATURE``)
the quantizers' training forward is the hard staircase itself, so the last epoch of a
short fine-tune trains exactly the network that is evaluated and exported (the effect
of the base is measured in docs/train.md). With
``per_step=True`` the epoch is fractional, ``epoch + step / steps_per_epoch``, so T
rises smoothly. ``schedule`` replaces the formula by any ``f(epoch) -> T``.
Weight temperatures are capped at ``weight_cap`` (2000 in the release), all at ``cap``.

The scheduler also puts the quantization gap (:mod:`tf_qnets.keras2.gap`) into the logs as
``quant_gap``: the progress bar shows it after every step and ``History`` keeps each
epoch's mean. It is the mean ``|soft - hard| / alpha`` of the quantizers, in levels:
how far what training computes is from what ``evaluate`` and the exported file compute.
It falls as T rises and is 0 once the forward is hard (T >= 100): from then on the
training accuracy in the progress bar is the deployed network's (with the default
``quantize_model(..., batch_norm="frozen")``; Keras BatchNormalization in batch mode
adds a difference of its own that the gap does not show: ``validation_data`` does).

The temperatures are non-trainable variables of the model: they are saved with it,
assigning them never retraces the train function, and a run resumed with
``keras.callbacks.BackupAndRestore`` continues from the right T.

Example::

    qat.fit(ds, epochs=10, callbacks=[tf_qnets.TemperatureScheduler()])   # base 10 here
"""

from tf_qnets.core.schedule import (  # noqa: F401  (auto_base: re-exported for the benchmarks)
    auto_base,
    validated_temperature,
)
from tf_qnets.core.schedule_hooks import SchedulerHooks
from tf_qnets.keras2.backend import keras
from tf_qnets.keras2.describe_network import describe_network
from tf_qnets.keras2.gap import gap_reader
from tf_qnets.keras2.quantizer import QNetsQuantizer
from tf_qnets.keras2.wrapper import quantizer_states

__all__ = ["TemperatureScheduler", "set_temperature", "get_temperatures"]

# From this many quantizers on (a keras.applications network has 50 to 300), a fit that
# shows progress says why its first batch takes long.
FIRST_BATCH_NOTICE_QUANTIZERS = 40


def build_optimizer_slots(model):
    """Create the model optimizer's variables (Adam's moments, ...) now, before the first step.

    ``tf_keras`` creates them inside the first training step, and a ``tf.function`` whose
    first trace creates variables is traced a second time: the whole train step, every
    quantizer's staircase in it, twice (the first step's time: docs/train.md). The list is
    the one the train step gives the optimizer, ``model.trainable_variables``, so the
    variables are the same.
    Optimizers without ``build(var_list)`` (``keras.optimizers.legacy``) and built ones are
    left alone.
    """
    optimizer = getattr(model, "optimizer", None)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        return
    if getattr(getattr(optimizer, "inner_optimizer", optimizer), "_built", False):
        return
    optimizer.build(model.trainable_variables)


def _temperature_variables(model, role=None):
    found = []
    for _, _, _, quantizer, variables in quantizer_states(model):
        if isinstance(quantizer, QNetsQuantizer) and (role is None or quantizer.role == role):
            found.append(variables["temperature"])
    return found


def set_temperature(model, weights=None, activations=None):
    """Assign the temperature of every weight and/or activation quantizer of ``model``."""
    for role, value in (("weights", weights), ("activations", activations)):
        if value is None:
            continue
        value = validated_temperature(value, f"{role} temperature")
        for variable in _temperature_variables(model, role):
            variable.assign(value)


def get_temperatures(model):
    """``{variable name: T}`` for every quantizer of ``model``."""
    return {v.name: float(v.numpy()) for v in _temperature_variables(model)}


@keras.utils.register_keras_serializable(package="tf_qnets")
class TemperatureScheduler(SchedulerHooks, keras.callbacks.Callback):
    """Raise the quantizers' temperature during ``fit`` (the hooks: :mod:`tf_qnets.core.schedule_hooks`).

    Args:
      base: slope of the default schedule ``T = base * (epoch + 1)``, or ``"auto"``
        (default): ``max(10, 100 / epochs)`` with the ``epochs`` of ``fit``.
      schedule: optional ``f(epoch) -> T`` used instead (``epoch`` is fractional with
        ``per_step=True``).
      per_step: update T every training step instead of every epoch.
      cap: upper bound on every temperature (None: no bound).
      weight_cap: upper bound on weight temperatures (2000, as in the authors' release).
      verbose: 1 prints T at each epoch start.
      show_gap: add ``quant_gap`` (:mod:`tf_qnets.keras2.gap`) to the logs: the latest value after
        each training step (progress bar), the epoch's mean at its end (``History``).
      snap_biases: at the end of ``fit``, move the folded biases that the integer file
        rounds onto its int32 lattice (at most half a unit each; the scales of
        int8 outputs onto an odd grid: :func:`tf_qnets.snap_biases`), so that ``evaluate``
        measures what the exported file computes.
    """

    def __init__(self, base="auto", schedule=None, per_step=False, cap=None, weight_cap=2000.0,
                 verbose=0, show_gap=True, snap_biases=True):
        keras.callbacks.Callback.__init__(self)
        self._init_hooks(base, schedule, per_step, cap, weight_cap, verbose, show_gap,
                         snap_biases)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        build_optimizer_slots(self.model)
        self._announce_first_batch()

    def _announce_first_batch(self):
        """Say why the first batch of a large network takes long, when ``fit`` shows progress
        and its train step has not been traced yet (nothing is shown until that batch ends)."""
        verbose = (getattr(self, "params", None) or {}).get("verbose", 0)
        tracing_count = getattr(getattr(self.model, "train_function", None),
                                "experimental_get_tracing_count", None)
        if not verbose or tracing_count is None or tracing_count() > 0:
            return
        count = len(_temperature_variables(self.model))
        if count >= FIRST_BATCH_NOTICE_QUANTIZERS:
            print(f"TemperatureScheduler: the first batch traces the training step of {count} "
                  "quantizers and XLA-compiles their kernels: it can take minutes on a CPU, "
                  "the later batches run at full speed (docs/train.md, \"The first batch\").",
                  flush=True)

    def _has_annealed_quantizers(self):
        return bool(_temperature_variables(self.model))

    def _assign_temperatures(self, weight_value, value):
        set_temperature(self.model, weights=weight_value, activations=value)

    def _logged_temperature(self):
        variables = (_temperature_variables(self.model, "activations")
                     or _temperature_variables(self.model))
        return float(variables[0].numpy())

    def _describe_network(self, model):
        return describe_network(model)

    def _make_gap_reader(self):
        read = gap_reader(self.model)
        if read is not None:
            read()   # trace now, not inside the first step's callback time
        return read

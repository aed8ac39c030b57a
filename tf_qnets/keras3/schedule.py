"""``TemperatureScheduler`` for Keras 3: anneal the soft staircase into the hard one during ``fit``.

Schedule (the authors' release): ``T = base * (epoch + 1)`` for epoch 0, 1, ...
``base="auto"`` (default) takes ``base = max(10, 100 / epochs)`` from the ``epochs`` given
to ``fit``: the paper's 10 for long schedules, and for short fine-tunes a base that still
ends at ``T = 100``, where the quantizers' training forward becomes the hard staircase
(``HARD_FORWARD_TEMPERATURE``). With ``per_step=True`` the epoch is fractional,
``epoch + step / steps_per_epoch``. ``schedule`` replaces the formula by any
``f(epoch) -> T``. Weight temperatures are capped at ``weight_cap`` (2000 in the
release), all of them at ``cap``. The activation temperature goes into the logs as
``temperature``, and the quantization gap (:mod:`tf_qnets.keras3.gap`) as ``quant_gap``:
the progress bar shows the latest value, ``History`` each epoch's mean. It is 0 once the
forward is hard (T >= 100): from then on the training accuracy in the progress bar is the
deployed network's (with the default ``batch_norm="frozen"``).

The temperatures are non-trainable variables: assigning them does not retrace the
training step, and they are saved with the model. Under JAX, ``fit`` keeps the variables'
values in its own state during an epoch; a callback's ``self.model`` hands that state back to
the variables first (Keras does it), so a per-step assignment is what the next step reads
(tests/keras3/test_k3_schedule.py checks it).

Example::

    qat.fit(x, y, epochs=10, callbacks=[TemperatureScheduler()])     # T = 10, 20, ..., 100
"""


import keras
from keras import ops

from tf_qnets.core.schedule import validated_temperature
from tf_qnets.core.schedule_hooks import SchedulerHooks
from tf_qnets.keras3.api import quantizers
from tf_qnets.keras3.describe_network import describe_network
from tf_qnets.keras3.gap import gap_variables, mean_gap
from tf_qnets.keras3.quantizer import QNetsQuantizer

__all__ = ["TemperatureScheduler", "get_temperatures", "set_temperature"]


def _annealed(model):
    """The quantizers with a temperature: the low-bit ones (8-bit ones have none)."""
    return [q for q in quantizers(model) if isinstance(q, QNetsQuantizer)]


def _temperature_variables(model, role=None):
    return [q.temperature for q in _annealed(model) if role is None or q.role == role]


def set_temperature(model, weights=None, activations=None):
    """Assign the temperature of every weight and/or activation quantizer of ``model``."""
    for role, value in (("weights", weights), ("activations", activations)):
        if value is None:
            continue
        value = validated_temperature(value, f"{role} temperature")
        for variable in _temperature_variables(model, role):
            variable.assign(value)


def get_temperatures(model):
    """``{quantizer name: T}`` for every low-bit quantizer of ``model`` (names such as
    ``"conv_kernel_quantizer"`` and ``"conv_output_quantizer"``; 8-bit ones have no T)."""
    return {q.name: float(ops.convert_to_numpy(q.temperature)) for q in _annealed(model)}


@keras.saving.register_keras_serializable(package="tf_qnets")
class TemperatureScheduler(SchedulerHooks, keras.callbacks.Callback):
    """Raise the quantizers' temperature during ``fit`` (the hooks: :mod:`tf_qnets.core.schedule_hooks`).

    Args:
      base: slope of ``T = base * (epoch + 1)``, or ``"auto"`` (default):
        ``max(10, 100 / epochs)`` with the ``epochs`` of ``fit``.
      schedule: optional ``f(epoch) -> T`` used instead (``epoch`` fractional with ``per_step``).
      per_step: update T every training step instead of every epoch.
      cap: upper bound on every temperature (None: no bound).
      weight_cap: upper bound on weight temperatures (2000, as in the authors' release).
      verbose: 1 prints T at each epoch start.
      show_gap: add ``quant_gap`` (:mod:`tf_qnets.keras3.gap`) to the logs: the latest value after
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

    def _has_annealed_quantizers(self):
        return bool(_temperature_variables(self.model))

    def _assign_temperatures(self, weight_value, value):
        set_temperature(self.model, weights=weight_value, activations=value)

    def _logged_temperature(self):
        variables = (_temperature_variables(self.model, "activations")
                     or _temperature_variables(self.model))
        return float(ops.convert_to_numpy(variables[0]))

    def _describe_network(self, model):
        return describe_network(model)

    def _make_gap_reader(self):
        variables = gap_variables(self.model)     # found once, read every step
        if not variables:
            return None

        def read():
            self.model   # noqa: B018  under JAX, reading self.model hands fit's state back first
            return mean_gap(variables)

        return read

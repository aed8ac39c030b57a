"""``TemperatureScheduler`` for Keras 3: anneal the soft staircase into the hard one during ``fit``.

Schedule (the authors' release): ``T = base * (epoch + 1)`` for epoch 0, 1, ...
``base="auto"`` (default) takes ``base = max(10, 100 / epochs)`` from the ``epochs`` given
to ``fit``: the paper's 10 for long schedules, and for short fine-tunes a base that still
ends at ``T = 100``, where the quantizers' training forward becomes the hard staircase
(``HARD_FORWARD_TEMPERATURE``). With ``per_step=True`` the epoch is fractional,
``epoch + step / steps_per_epoch``. ``schedule`` replaces the formula by any
``f(epoch) -> T``. Weight temperatures are capped at ``weight_cap`` (2000 in the
release), all of them at ``cap``. The activation temperature goes into the logs as
``temperature``.

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

from tf_qnets.core.schedule import ScheduleRules, validated_temperature
from tf_qnets.keras3.api import quantizers
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
class TemperatureScheduler(ScheduleRules, keras.callbacks.Callback):
    """Raise the quantizers' temperature during ``fit``.

    Args:
      base: slope of ``T = base * (epoch + 1)``, or ``"auto"`` (default):
        ``max(10, 100 / epochs)`` with the ``epochs`` of ``fit``.
      schedule: optional ``f(epoch) -> T`` used instead (``epoch`` fractional with ``per_step``).
      per_step: update T every training step instead of every epoch.
      cap: upper bound on every temperature (None: no bound).
      weight_cap: upper bound on weight temperatures (2000, as in the authors' release).
      verbose: 1 prints T at each epoch start.
    """

    def __init__(self, base="auto", schedule=None, per_step=False, cap=None, weight_cap=2000.0,
                 verbose=0):
        keras.callbacks.Callback.__init__(self)
        self._init_rules(base, schedule, per_step, cap, weight_cap)
        self.verbose = verbose
        self._epoch = 0

    def _apply(self, epoch):
        weight_value, value = self.temperatures(epoch)
        set_temperature(self.model, weights=weight_value, activations=value)
        return value

    def on_train_begin(self, logs=None):
        if not _temperature_variables(self.model):
            raise ValueError(
                "TemperatureScheduler: the model has no tf_qnets quantizers; use it with a model "
                "returned by tf_qnets.keras3.quantize_model().")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        value = self._apply(float(epoch))
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: temperature T = {value:g}")

    def on_train_batch_begin(self, batch, logs=None):
        if not self.per_step:
            return
        steps = (getattr(self, "params", None) or {}).get("steps") or 0
        self._apply(self._epoch + (batch / steps if steps else 0.0))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            variables = (_temperature_variables(self.model, "activations")
                         or _temperature_variables(self.model))
            logs["temperature"] = float(ops.convert_to_numpy(variables[0]))

    def get_config(self):
        return {"base": self.base, "per_step": self.per_step, "cap": self.cap,
                "weight_cap": self.weight_cap, "verbose": self.verbose}

    @classmethod
    def from_config(cls, config):
        """Rebuild from :meth:`get_config` (a custom ``schedule`` callable is not part of it)."""
        return cls(**config)

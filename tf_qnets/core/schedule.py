"""The temperature schedule: how ``T`` rises during training, without a framework.

Default (the authors' release): ``T = base * (epoch + 1)`` for epoch 0, 1, ... (the paper
writes ``T = base * epoch``). ``base="auto"`` takes ``base = max(10, 100 / epochs)`` from the
``epochs`` given to ``fit``: the paper's 10 for long schedules, and for short fine-tunes a
base that still ends at ``T = HARD_FORWARD_TEMPERATURE`` (100), from which the quantizers'
training forward is the hard staircase itself. ``schedule`` replaces the formula by any
``f(epoch) -> T`` (``epoch`` fractional with ``per_step``). Weight temperatures are capped
at ``weight_cap`` (2000 in the release), all of them at ``cap``.

:class:`ScheduleRules` holds these options and answers "which temperatures at this epoch";
each framework's ``TemperatureScheduler`` callback mixes it in and assigns the answer to its
quantizers' variables.

Example::

    >>> auto_base(epochs=5)                         # a 5-epoch fine-tune ends at T = 100
    20.0
    >>> ScheduleRules(base=20.0, cap=50.0).temperatures(epoch=3.0)
    (50.0, 50.0)
"""

import math
import numbers

__all__ = ["AUTO_BASE", "HARD_FORWARD_TEMPERATURE", "ScheduleRules", "auto_base",
           "validated_temperature"]

# From this temperature on, the quantizers' training forward is the hard staircase.
HARD_FORWARD_TEMPERATURE = 100.0
# base="auto": the paper's base for long schedules, else one that ends at the hard forward.
AUTO_BASE = 10.0


def auto_base(epochs):
    """``base="auto"``: ``max(10, 100 / epochs)``; 10 when ``epochs`` is unknown (None or 0)."""
    return max(AUTO_BASE, HARD_FORWARD_TEMPERATURE / epochs) if epochs else AUTO_BASE


def validated_temperature(value, argument):
    """``value`` as a float, or a ``TypeError``/``ValueError`` naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{argument}` must be a positive number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"`{argument}` must be a finite temperature > 0, got {value}.")
    return value


class ScheduleRules:
    """The schedule's options, validated, and the temperatures they give at an epoch.

    A callback that mixes this in reads the running ``fit``'s epochs from its ``params``.
    """

    def _init_rules(self, base="auto", schedule=None, per_step=False, cap=None,
                    weight_cap=2000.0):
        if isinstance(base, str) and base == "auto":
            self.base = "auto"
        elif isinstance(base, str):
            raise TypeError(f"`base` must be a positive number or 'auto', got {base!r}.")
        else:
            self.base = validated_temperature(base, "base")
        if schedule is not None and not callable(schedule):
            raise TypeError(f"`schedule` must be a callable epoch -> temperature, got {schedule!r}.")
        self.schedule = schedule
        self.per_step = bool(per_step)
        self.cap = None if cap is None else validated_temperature(cap, "cap")
        self.weight_cap = None if weight_cap is None else validated_temperature(weight_cap,
                                                                                "weight_cap")

    def __init__(self, base="auto", schedule=None, per_step=False, cap=None, weight_cap=2000.0):
        self._init_rules(base, schedule, per_step, cap, weight_cap)

    def _fit_epochs(self):
        return (getattr(self, "params", None) or {}).get("epochs")

    @property
    def resolved_base(self):
        """The number ``base`` stands for: itself, or for ``"auto"`` ``max(10, 100 / epochs)``
        with the ``epochs`` of the running ``fit`` (10 before ``fit`` sets them)."""
        if self.base != "auto":
            return self.base
        return auto_base(self._fit_epochs())

    def temperature_at(self, epoch):
        """The (uncapped) activation temperature at a possibly fractional epoch."""
        if self.schedule is not None:
            return validated_temperature(self.schedule(epoch), "schedule(epoch)")
        return self.resolved_base * (epoch + 1.0)

    def temperatures(self, epoch):
        """``(weight T, activation T)`` at ``epoch``, caps applied."""
        value = self.temperature_at(epoch)
        if self.cap is not None:
            value = min(value, self.cap)
        weight_value = value if self.weight_cap is None else min(value, self.weight_cap)
        return weight_value, value

"""What ``TemperatureScheduler`` does at each callback hook, for both Keras paths.

The schedule itself (which temperatures at an epoch) is :class:`tf_qnets.core.schedule.
ScheduleRules`; this mixin adds the callback protocol around it, written once:

* ``on_train_begin``: refuse a model without low-bit quantizers; say the resolved schedule
  with ``verbose``;
* ``on_epoch_begin`` / ``on_train_batch_begin`` (``per_step``): assign
  ``(weight T, activation T)`` at the epoch, fractional with ``per_step``
  (``epoch + batch / steps``);
* ``on_train_batch_end``: with ``show_gap``, put the quantization gap
  (:mod:`tf_qnets.core.gap`) into the logs as ``quant_gap``: the progress bar shows the
  latest value;
* ``on_epoch_end``: the epoch's mean gap and the activation temperature go into the logs
  (``History``);
* ``on_train_end``: with ``snap_biases``, the folded biases that the integer file rounds move
  onto its int32 lattice (:mod:`tf_qnets.core.bias_lattice`: at most half a unit each), so
  that ``evaluate`` after ``fit`` measures what the exported file computes (numpy only, any
  backend). Skipped, with a line under ``verbose``, when the model cannot be described for
  export.

A framework's scheduler mixes this in before its ``Callback`` class and defines five
methods over its own model (each path reads its own variables):

* ``_has_annealed_quantizers()``: whether ``self.model`` has quantizers with a temperature;
* ``_assign_temperatures(weight_value, value)``: assign the weight and activation T;
* ``_logged_temperature()``: the activation temperature (the weight one when there are no
  activation quantizers), a float;
* ``_make_gap_reader()``: a function returning the mean gap as a float, or None when the
  model has no gap to read;
* ``_describe_network(model)``: the model's :class:`tf_qnets.core.network.NetworkDescription`
  (what :func:`tf_qnets.core.bias_lattice.snap_biases` reads).

Example (the temperatures an epoch gets, whatever the framework)::

    >>> ScheduleRules(base="auto").temperatures(epoch=0)   # before fit: base 10
    (10.0, 10.0)
"""

from tf_qnets.core.bias_lattice import snap_if_describable
from tf_qnets.core.gap import GAP_LOG_NAME
from tf_qnets.core.schedule import ScheduleRules

__all__ = ["SchedulerHooks", "SchedulerOptions"]

NO_QUANTIZERS_MESSAGE = (
    "TemperatureScheduler: the model has no tf_qnets quantizers; use it with a model returned "
    "by tf_qnets.quantize_model().")


class SchedulerOptions(ScheduleRules):
    """``TemperatureScheduler``'s arguments, validated, and its Keras config (shared by the two
    paths' schedulers and the top-level adapter that builds one of them)."""

    GAP_LOG_NAME = GAP_LOG_NAME

    def _init_options(self, base, schedule, per_step, cap, weight_cap, verbose, show_gap,
                      snap_biases=True):
        self._init_rules(base, schedule, per_step, cap, weight_cap)
        if not isinstance(show_gap, bool):
            raise TypeError(f"`show_gap` must be a bool, got {show_gap!r}.")
        if not isinstance(snap_biases, bool):
            raise TypeError(f"`snap_biases` must be a bool, got {snap_biases!r}.")
        self.verbose = verbose
        self.show_gap = show_gap
        self.snap_biases = snap_biases

    def options(self):
        """The constructor's arguments, ``schedule`` included."""
        return dict(self.get_config(), schedule=self.schedule)

    def get_config(self):
        return {"base": self.base, "per_step": self.per_step, "cap": self.cap,
                "weight_cap": self.weight_cap, "verbose": self.verbose,
                "show_gap": self.show_gap, "snap_biases": self.snap_biases}

    @classmethod
    def from_config(cls, config):
        """Rebuild from :meth:`get_config` (a custom ``schedule`` callable is not part of it)."""
        return cls(**config)


class SchedulerHooks(SchedulerOptions):
    """The ``TemperatureScheduler`` callback hooks (see the module for what a subclass defines)."""

    def _init_hooks(self, base, schedule, per_step, cap, weight_cap, verbose, show_gap,
                    snap_biases=True):
        self._init_options(base, schedule, per_step, cap, weight_cap, verbose, show_gap,
                           snap_biases)
        self._epoch = 0
        self._read_gap = None
        self._gap_sum = 0.0
        self._gap_count = 0

    def _apply(self, epoch):
        weight_value, value = self.temperatures(epoch)
        self._assign_temperatures(weight_value, value)
        return value

    def on_train_begin(self, logs=None):
        if not self._has_annealed_quantizers():
            raise ValueError(NO_QUANTIZERS_MESSAGE)
        if self.verbose and self.schedule is None:
            chosen = " (base='auto')" if self.base == "auto" else ""
            print(f"TemperatureScheduler: T = {self.resolved_base:g} * (epoch + 1){chosen}")
        self._read_gap = self._make_gap_reader() if self.show_gap else None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._gap_sum, self._gap_count = 0.0, 0
        value = self._apply(float(epoch))
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: temperature T = {value:g}")

    def on_train_batch_begin(self, batch, logs=None):
        if not self.per_step:
            return
        steps = (getattr(self, "params", None) or {}).get("steps") or 0
        self._apply(self._epoch + (batch / steps if steps else 0.0))

    def on_train_batch_end(self, batch, logs=None):
        if self._read_gap is None or logs is None:
            return
        value = float(self._read_gap())
        self._gap_sum += value
        self._gap_count += 1
        logs[self.GAP_LOG_NAME] = value

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if self._gap_count:
            logs[self.GAP_LOG_NAME] = self._gap_sum / self._gap_count
        logs["temperature"] = self._logged_temperature()

    def on_train_end(self, logs=None):
        if not self.snap_biases:
            return
        announce = (lambda line: print(f"TemperatureScheduler: {line}")) if self.verbose else None
        snap_if_describable(self.model, self._describe_network, announce)

"""``tf_qnets.TemperatureScheduler`` and ``tf_qnets.QuantizerTensorBoard`` for either Keras.

A callback is created before ``fit`` shows it its model, so the public classes cannot know
which Keras they serve when constructed. Each is a small adapter: it checks its arguments at
once (the same errors on both paths), and when ``fit`` calls ``set_model`` it creates the
callback of the model's own path, :mod:`tf_qnets.keras2.schedule` for a ``tf_keras`` model
or :mod:`tf_qnets.keras3.schedule` for a Keras 3 model (likewise for the TensorBoard
callback), and forwards every hook to it. Both Kerases call their callbacks through the
methods below only (duck typing), so the adapter works in the ``fit`` of either, under
``tf.distribute`` and with JAX's state handling, which the forwarded-to callback does as usual.

Example::

    qat.fit(x, y, epochs=10, callbacks=[tf_qnets.TemperatureScheduler()])   # Keras 2 or 3
"""

import importlib

from tf_qnets.core.quantizer_logs import (
    validated_log_dir,
    validated_probe_data,
    validated_update_freq,
)
from tf_qnets.core.schedule_hooks import SchedulerOptions
from tf_qnets.frontend import path_of

__all__ = ["QuantizerTensorBoard", "TemperatureScheduler"]

_HOOKS = (
    "on_batch_begin", "on_batch_end", "on_epoch_begin", "on_epoch_end",
    "on_train_begin", "on_train_end", "on_test_begin", "on_test_end",
    "on_predict_begin", "on_predict_end",
    "on_train_batch_begin", "on_train_batch_end", "on_test_batch_begin", "on_test_batch_end",
    "on_predict_batch_begin", "on_predict_batch_end",
)


class _PathCallback:
    """Forwards the callback protocol to the callback of the model's Keras path.

    A subclass names the module (``_MODULE``) and class (``_CLASS``) it binds to under
    ``tf_qnets.keras2`` / ``tf_qnets.keras3`` and defines ``_options(path)``: the constructor
    arguments of that class.
    """

    _MODULE = ""      # module name under tf_qnets.keras2 / tf_qnets.keras3
    _CLASS = ""

    def __init__(self):
        self._bound = None
        self._bound_path = None
        self._params = {}

    def _bind(self, model):
        path = path_of(model)
        if self._bound is None or self._bound_path != path:
            module = importlib.import_module(f"tf_qnets.{path}.{self._MODULE}")
            self._bound = getattr(module, self._CLASS)(**self._options(path))
            self._bound_path = path
            if self._params:
                self._bound.set_params(self._params)
        return self._bound

    @property
    def bound(self):
        """The Keras-2 or Keras-3 callback doing the work (None before ``set_model``)."""
        return self._bound

    @property
    def model(self):
        return None if self._bound is None else self._bound.model

    @property
    def params(self):
        return self._params

    def set_model(self, model):
        self._bind(model).set_model(model)

    def set_params(self, params):
        self._params = params
        if self._bound is not None:
            self._bound.set_params(params)

    # tf_keras asks which batch hooks a callback implements.
    def _implements_train_batch_hooks(self):
        return True

    def _implements_test_batch_hooks(self):
        return False

    def _implements_predict_batch_hooks(self):
        return False


def _forwarding_hook(name):
    def hook(self, *args, **kwargs):
        if self._bound is not None:
            return getattr(self._bound, name)(*args, **kwargs)
        return None

    hook.__name__ = name
    hook.__doc__ = f"Forwarded to the bound callback's ``{name}``."
    return hook


for _name in _HOOKS:
    setattr(_PathCallback, _name, _forwarding_hook(_name))


class TemperatureScheduler(SchedulerOptions, _PathCallback):
    """Raise the quantizers' temperature during ``fit`` (Keras 2 and Keras 3 models).

    Schedule (the authors' release): ``T = base * (epoch + 1)`` for epoch 0, 1, ...;
    ``base="auto"`` takes ``base = max(10, 100 / epochs)`` from the ``epochs`` of ``fit``,
    so short fine-tunes still end at ``T = 100``, where the training forward is the hard
    staircase. Details: :mod:`tf_qnets.keras2.schedule`, :mod:`tf_qnets.keras3.schedule`.

    Args:
      base: slope of ``T = base * (epoch + 1)``, or ``"auto"`` (default).
      schedule: optional ``f(epoch) -> T`` used instead (``epoch`` fractional with ``per_step``).
      per_step: update T every training step instead of every epoch.
      cap: upper bound on every temperature (None: no bound).
      weight_cap: upper bound on weight temperatures (2000, as in the authors' release).
      verbose: 1 prints T at each epoch start.
      show_gap: log the quantization gap ``quant_gap`` (:mod:`tf_qnets.core.gap`): the latest
        value after each training step (progress bar), the epoch's mean (``History``).
      snap_biases: at the end of ``fit``, move the folded biases that the integer file
        rounds onto its int32 lattice (at most half a unit each; the scales of
        int8 outputs onto an odd grid: :func:`tf_qnets.snap_biases`), so that ``evaluate``
        measures what the exported file computes.

    Example::

        qat.fit(x, y, epochs=10, callbacks=[tf_qnets.TemperatureScheduler()])  # T = 10..100
    """

    def __init__(self, base="auto", schedule=None, per_step=False, cap=None, weight_cap=2000.0,
                 verbose=0, show_gap=True, snap_biases=True):
        _PathCallback.__init__(self)
        self._init_options(base, schedule, per_step, cap, weight_cap, verbose, show_gap,
                           snap_biases)

    _MODULE = "schedule"
    _CLASS = "TemperatureScheduler"

    def _options(self, path):
        return self.options()


class QuantizerTensorBoard(_PathCallback):
    """Log temperature, alpha, beta and saturation of every quantizer to TensorBoard
    (Keras 2 and Keras 3 models). Tags and the saturation formula:
    :mod:`tf_qnets.keras2.tensorboard`, :mod:`tf_qnets.keras3.tensorboard`.

    Args:
      log_dir: folder for the event files (written under ``<log_dir>/quantizers``).
      update_freq: ``"epoch"`` or an int ``N`` (log every ``N`` training batches).
      data: optional fixed batch of model inputs for the activations' saturation.

    Example::

        qat.fit(x, y, epochs=10, callbacks=[tf_qnets.TemperatureScheduler(),
                                            tf_qnets.QuantizerTensorBoard("logs", data=x[:32])])
    """

    _MODULE = "tensorboard"
    _CLASS = "QuantizerTensorBoard"

    def __init__(self, log_dir, update_freq="epoch", data=None):
        _PathCallback.__init__(self)
        self.log_dir = validated_log_dir(log_dir)
        self.update_freq = validated_update_freq(update_freq)
        self.data = validated_probe_data(data)

    def _options(self, path):
        return {"log_dir": self.log_dir, "update_freq": self.update_freq, "data": self.data}

    def values(self):
        """``{tag: value}`` of the model's current state (see the bound callback)."""
        if self._bound is None:
            raise ValueError("QuantizerTensorBoard.values(): call it once fit has started "
                             "(the callback does not know its model before).")
        return self._bound.values()

    def get_config(self):
        return {"log_dir": self.log_dir, "update_freq": self.update_freq}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

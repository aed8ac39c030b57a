"""What the ``QuantizerTensorBoard`` callbacks log, without a framework.

For every low-bit quantizer the callbacks of both Keras paths write four scalars to
``<log_dir>/quantizers`` (:data:`RUN_NAME`): ``temperature``, ``alpha``, ``beta`` and
``saturation``, tagged ``<name>/<layer>/<tensor>``. The saturation of a tensor ``x`` with
thresholds ``b_1..b_n`` is::

    saturation = mean over elements of  [ min_i |T * (beta * x - b_i)| >= 10 ]

the share of elements whose every sigmoid argument sits at the clamp (``+-10``,
:data:`tf_qnets.core.staircase.CLAMP`): there the soft staircase equals the hard one up to
``sigmoid(-10) ~ 4.5e-5`` of a step and passes no gradient. It rises towards 1 as ``T`` grows.

Example::

    >>> saturation([0.0, 0.5, 2.0], beta=1.0, thresholds=[0.5, 1.5], temperature=40.0)
    0.6666666666666666
"""

import numbers
import os

import numpy as np

from tf_qnets.core.staircase import CLAMP

__all__ = ["RUN_NAME", "saturation", "validated_log_dir", "validated_probe_data",
           "validated_update_freq"]

RUN_NAME = "quantizers"


def saturation(x, beta, thresholds, temperature):
    """Fraction of the elements of ``x`` whose every sigmoid argument is clamped.

    ``mean([min_i |T (beta x - b_i)| >= 10])``, computed with a search in the sorted
    thresholds (the nearest threshold decides), in NumPy float64.
    """
    u = float(beta) * np.asarray(x, dtype=np.float64).ravel()
    if u.size == 0:
        return 1.0
    b = np.sort(np.asarray(thresholds, dtype=np.float64).ravel())
    index = np.searchsorted(b, u)
    above = b[np.minimum(index, b.size - 1)]
    below = b[np.maximum(index - 1, 0)]
    nearest = np.minimum(np.abs(u - above), np.abs(u - below))
    return float(np.mean(float(temperature) * nearest >= CLAMP))


def validated_log_dir(log_dir):
    """``log_dir`` as a str, or a TypeError naming the argument."""
    if not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError(f"`log_dir` must be a folder path (str), got {log_dir!r}.")
    return os.fspath(log_dir)


def validated_update_freq(update_freq):
    """``"epoch"`` or a positive int, else a ValueError naming the argument."""
    if update_freq == "epoch":
        return update_freq
    if (isinstance(update_freq, numbers.Integral) and not isinstance(update_freq, bool)
            and update_freq >= 1):
        return int(update_freq)
    raise ValueError(
        f"`update_freq` must be 'epoch' or a positive int (log every that many training "
        f"batches), got {update_freq!r}.")


def validated_probe_data(data):
    """``data`` (one fixed batch of model inputs) as a NumPy array, or None."""
    if data is None:
        return None
    if hasattr(data, "element_spec"):      # a tf.data.Dataset
        raise TypeError(
            "`data` must be one fixed batch of model inputs (a NumPy array or tensor, e.g. "
            "`x_train[:32]`), not a tf.data.Dataset; take one with `next(iter(ds))[0]`.")
    array = np.asarray(data)
    if not np.issubdtype(array.dtype, np.number) or array.ndim == 0:
        raise TypeError(
            f"`data` must be a numeric batch of model inputs, got dtype {array.dtype} "
            f"and shape {array.shape}.")
    return array


class LogCadence:
    """When a ``QuantizerTensorBoard`` writes, without a framework: mixed into each Keras
    path's callback, which defines ``_write(step)`` (log every value at ``step``) and
    ``_iterations()`` (the optimizer's step count, or None).

    ``update_freq="epoch"``: at the end of each epoch, step = the epoch index; an int ``N``:
    after every training batch whose optimizer step count is a multiple of ``N``, step = that
    count (it continues across ``fit`` calls; batches seen in this run if there is no
    optimizer).
    """

    def _init_cadence(self, log_dir, update_freq, data):
        self.log_dir = validated_log_dir(log_dir)
        self.update_freq = validated_update_freq(update_freq)
        self.data = validated_probe_data(data)
        self._batches_seen = 0

    def _train_step(self):
        iterations = self._iterations()
        return self._batches_seen if iterations is None else int(iterations)

    def on_train_batch_end(self, batch, logs=None):
        self._batches_seen += 1
        if self.update_freq != "epoch":
            step = self._train_step()
            if step % self.update_freq == 0:
                self._write(step)

    def on_epoch_end(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self._write(epoch)

    def get_config(self):
        return {"log_dir": self.log_dir, "update_freq": self.update_freq}

    @classmethod
    def from_config(cls, config):
        """Rebuild from :meth:`get_config` (``data`` is not part of it)."""
        return cls(**config)

"""The quantization gap on the Keras 3 path (the definition: :mod:`tf_qnets.core.gap`).

``gap = mean_k |soft(x_k) - hard(x_k)| / |alpha|`` over a sample of at most
``GAP_SAMPLE_SIZE`` elements of each quantized tensor: how far training's forward (the
soft staircase below ``T = 100``) is from the deployed network's (the hard one), in levels.

Every :class:`tf_qnets.keras3.quantizer.QNetsQuantizer` records its latest gap in a
non-trainable scalar variable, ``quantizer.gap``, on each training call (under JAX the
training step returns it with the other non-trainable state, as BatchNormalization's
statistics). It is saved with the model but takes no part in what the model computes.
:func:`quantization_gap` averages the quantizers' values;
:class:`tf_qnets.keras3.schedule.TemperatureScheduler` shows that mean as ``quant_gap`` in
the progress bar and the ``History``.

Example::

    >>> import keras, numpy as np
    >>> from tf_qnets.keras3 import quantize_model
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> q = quantize_model(m, w_bits=2, first_last="low_bit")
    >>> _ = q(np.ones((2, 4), "float32"), training=True)     # one soft forward at T = 1
    >>> quantization_gap(q) > 0.0
    True
"""

from keras import ops

from tf_qnets.core.gap import GAP_SAMPLE_SIZE

__all__ = ["gap_sample", "gap_value", "gap_variables", "mean_gap", "quantization_gap"]


def gap_sample(tensor, role):
    """The elements of ``tensor`` the gap is measured on, as a 1-D tensor (the selection of
    :func:`tf_qnets.core.gap.sample_indices`): for ``role="activations"`` the first example
    of the batch, for ``"weights"`` the whole kernel; then every ``size // GAP_SAMPLE_SIZE``-th
    element when the size is known, the first ``GAP_SAMPLE_SIZE``. The same selection applied
    to an elementwise quantizer's input and output picks matching elements."""
    if role == "activations" and len(tensor.shape) > 1:
        tensor = tensor[:1]
    flat = ops.reshape(tensor, (-1,))
    size = flat.shape[0]
    if size is not None and size > GAP_SAMPLE_SIZE:
        flat = flat[::size // GAP_SAMPLE_SIZE]
    return flat[:GAP_SAMPLE_SIZE]


def gap_value(soft_values, hard_values, alpha):
    """``mean |soft - hard| / max(|alpha|, 1e-12)`` in float32 (0 for an empty sample), with
    no gradient: it only feeds the gap variable."""
    soft_values = ops.cast(ops.stop_gradient(soft_values), "float32")
    hard_values = ops.cast(ops.stop_gradient(hard_values), "float32")
    total = ops.sum(ops.abs(soft_values - hard_values))
    count = ops.sum(ops.ones_like(soft_values))
    scale = ops.maximum(ops.abs(ops.cast(ops.stop_gradient(alpha), "float32")), 1e-12)
    return ops.divide_no_nan(total, count) / scale


def gap_variables(model):
    """The gap variables of ``model``'s low-bit quantizers (8-bit ones have none)."""
    from tf_qnets.keras3.api import quantizers   # api imports the quantizer, which imports us

    return [q.gap for q in quantizers(model) if getattr(q, "gap", None) is not None]


def mean_gap(variables):
    """The mean of the gap ``variables`` (from :func:`gap_variables`), a Python float; 0.0 for
    none. One device read for all of them."""
    if not variables:
        return 0.0
    return float(ops.convert_to_numpy(ops.mean(ops.stack([v.value for v in variables]))))


def quantization_gap(model):
    """The mean over ``model``'s quantizers of their latest gap, a Python float (0.0 before
    any training call, or for a model without quantizers)."""
    return mean_gap(gap_variables(model))

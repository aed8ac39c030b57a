"""Calibration data for the Keras 3 path: whatever the user passes, as a list of input batches.

Accepted: a NumPy array of inputs (split into batches of 32), an ``(x, y)`` or
``(x, y, sample_weight)`` tuple of arrays, or any iterable of batches (a list, a
``keras.utils.PyDataset``, a ``tf.data.Dataset`` under the TensorFlow backend, a generator)
whose elements are inputs or ``(inputs, labels, ...)`` tuples. Only models with one input
are supported.

Example::

    batches = calibration_batches(x_train[:512], model)     # 16 batches of 32
"""

import numpy as np

__all__ = ["calibration_batches"]

BATCH_SIZE = 32


def _as_array(value, argument):
    try:
        array = np.asarray(value)
    except Exception as error:   # e.g. a dict of inputs
        raise TypeError(
            f"`{argument}` must yield array-like input batches, got {type(value).__name__}.") from error
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"`{argument}` must hold numeric inputs, got dtype {array.dtype}.")
    return array


def calibration_batches(data, model, argument="calibration_data", max_batches=None):
    """The input batches of ``data`` (numpy arrays); clear errors for empty or mis-shaped data.

    ``max_batches``: keep at most this many batches (an array counts in batches of
    :data:`BATCH_SIZE`); an iterable is read no further, so it may be endless.
    """
    if len(model.inputs) != 1:
        raise ValueError(
            f"`{argument}`: the Keras 3 path calibrates models with one input; this model has "
            f"{len(model.inputs)}.")
    if isinstance(data, tuple) and len(data) in (2, 3) and hasattr(data[0], "shape"):
        data = data[0]
    if hasattr(data, "shape") and hasattr(data, "dtype"):
        array = _as_array(data, argument)
        batches = [array[i:i + BATCH_SIZE] for i in range(0, len(array), BATCH_SIZE)]
        batches = batches[:max_batches]
    elif hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)):
        batches = []
        for element in data:
            if max_batches is not None and len(batches) >= max_batches:
                break
            if isinstance(element, (tuple, list)):
                element = element[0]
            batches.append(_as_array(element, argument))
    else:
        raise TypeError(
            f"`{argument}` must be a NumPy array of inputs, an (x, y) tuple, or an iterable of "
            f"input batches (or (x, y) batches); got {type(data).__name__}.")
    if not batches or sum(len(batch) for batch in batches) == 0:
        raise ValueError(f"`{argument}` is empty; give a few batches of typical inputs.")
    expected = tuple(model.inputs[0].shape)
    for batch in batches:
        shape = tuple(batch.shape)
        if len(shape) != len(expected) or any(
                e is not None and e != s for e, s in zip(expected[1:], shape[1:])):
            raise ValueError(
                f"`{argument}` batches have shape {shape}, but the model expects inputs of shape "
                f"{expected} (batch first). Batch the data and make sure it yields model inputs "
                "(or (inputs, labels)).")
    return batches

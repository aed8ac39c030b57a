"""Calibration data, without a framework: whatever the user passes, as a list of input batches.

Accepted: a NumPy array of inputs (split into batches of 32), an ``(x, y)`` or
``(x, y, sample_weight)`` tuple of arrays, or any iterable of batches (a list, a generator, a
framework's dataset converted to NumPy by the caller) whose elements are inputs or
``(inputs, labels, ...)`` tuples.

A model with several inputs takes, wherever one input's array would go, a list or tuple of
arrays in the order of the model's inputs, or a dict keyed by the input names; a batch is
then a list of arrays, one per input (:func:`tf_qnets.core.calibration.batch_length` counts
its samples).

The model is described by ``specs``: a list of ``(name, shape)`` pairs, the shape with the
batch dimension first (``None`` for unknown sizes).

Example::

    >>> import numpy as np
    >>> batches = input_batches(np.zeros((70, 5)), [("x", (None, 5))])
    >>> [len(batch) for batch in batches]
    [32, 32, 6]
    >>> two = [("image", (None, 4, 4, 1)), ("meta", (None, 3))]
    >>> batches = input_batches({"meta": np.ones((8, 3)), "image": np.ones((8, 4, 4, 1))}, two)
    >>> [array.shape for array in batches[0]]
    [(8, 4, 4, 1), (8, 3)]
"""

import numpy as np

from tf_qnets.core.calibration import batch_length

__all__ = ["BATCH_SIZE", "input_batches"]

BATCH_SIZE = 32


def _as_array(value, argument):
    try:
        array = np.asarray(value)
    except Exception as error:   # e.g. ragged nested lists
        raise TypeError(
            f"`{argument}` must yield array-like input batches, got {type(value).__name__}.") from error
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"`{argument}` must hold numeric inputs, got dtype {array.dtype}.")
    return array


def _is_array(value):
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _is_inputs(value, specs):
    """Whether ``value`` is one set of model inputs (not an ``(inputs, labels)`` pair)."""
    if len(specs) == 1:
        return _is_array(value)
    if isinstance(value, dict):
        return True
    return (isinstance(value, (list, tuple)) and len(value) == len(specs)
            and all(_is_array(item) for item in value))


def _arrays(inputs, specs, argument):
    """One set of model inputs as a list of arrays in the order of ``specs``."""
    if isinstance(inputs, dict):
        names = [name for name, _ in specs]
        missing = [name for name in names if name not in inputs]
        if missing:
            raise ValueError(f"`{argument}` has no inputs named {missing}; the model's inputs "
                             f"are {names}.")
        inputs = [inputs[name] for name in names]
    return [_as_array(item, argument) for item in inputs]


def _strip_labels(element, specs, argument):
    """The inputs of a batch that may be ``(inputs, labels[, sample_weight])``."""
    if _is_inputs(element, specs):
        return element
    if isinstance(element, (tuple, list)) and element and _is_inputs(element[0], specs):
        return element[0]
    if len(specs) == 1:
        return element
    names = [name for name, _ in specs]
    raise ValueError(
        f"`{argument}`: the model has {len(specs)} inputs {names}; give each batch as a list "
        f"of {len(specs)} arrays in that order, or a dict keyed by the input names (or either "
        f"of those with labels: (inputs, labels)); got {type(element).__name__}.")


def _split(inputs, specs, argument):
    """Whole-dataset inputs -> batches of :data:`BATCH_SIZE`."""
    if len(specs) == 1:
        array = _as_array(inputs, argument)
        return [array[i:i + BATCH_SIZE] for i in range(0, len(array), BATCH_SIZE)]
    arrays = _arrays(inputs, specs, argument)
    _check_lengths(arrays, argument)
    return [[array[i:i + BATCH_SIZE] for array in arrays]
            for i in range(0, len(arrays[0]), BATCH_SIZE)]


def _check_lengths(arrays, argument):
    if len({len(array) for array in arrays}) > 1:
        raise ValueError(f"`{argument}`: the inputs have different lengths "
                         f"{[len(array) for array in arrays]}; every input needs one row per "
                         "sample.")


def _check_shapes(batches, specs, argument):
    for batch in batches:
        arrays = batch if len(specs) > 1 else [batch]
        _check_lengths(arrays, argument)
        for (name, expected), array in zip(specs, arrays):
            expected, shape = tuple(expected), tuple(array.shape)
            if len(shape) != len(expected) or any(
                    e is not None and e != s for e, s in zip(expected[1:], shape[1:])):
                which = f" for input {name!r}" if len(specs) > 1 else ""
                raise ValueError(
                    f"`{argument}` batches have shape {shape}{which}, but the model expects "
                    f"inputs of shape {expected} (batch first). Batch the data and make sure it "
                    "yields model inputs (or (inputs, labels)).")


def input_batches(data, specs, argument="calibration_data", max_batches=None):
    """The input batches of ``data`` as NumPy arrays (a list of arrays per batch when ``specs``
    names several inputs); clear errors for empty or mis-shaped data.

    Args:
      data: see the module docstring.
      specs: the model's inputs, ``[(name, shape), ...]``, batch dimension first.
      argument: the argument name the messages give.
      max_batches: keep at most this many batches (an array counts in batches of
        :data:`BATCH_SIZE`); an iterable is read no further, so it may be endless.
    """
    if _is_inputs(data, specs):
        batches = _split(data, specs, argument)[:max_batches]
    elif isinstance(data, tuple) and len(data) in (2, 3) and _is_inputs(data[0], specs):
        batches = _split(data[0], specs, argument)[:max_batches]
    elif hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)):
        batches = []
        for element in data:
            if max_batches is not None and len(batches) >= max_batches:
                break
            inputs = _strip_labels(element, specs, argument)
            batches.append(_as_array(inputs, argument) if len(specs) == 1
                           else _arrays(inputs, specs, argument))
    else:
        several = (" (for a model with several inputs: a list of arrays or a dict keyed by the "
                   "input names)" if len(specs) > 1 else "")
        raise TypeError(
            f"`{argument}` must be a NumPy array of inputs{several}, an (x, y) tuple, or an "
            f"iterable of input batches (or (x, y) batches); got {type(data).__name__}.")
    batches = [batch for batch in batches if batch_length(batch) > 0]   # e.g. a slice past the end
    if not batches:
        raise ValueError(f"`{argument}` is empty; give a few batches of typical inputs.")
    _check_shapes(batches, specs, argument)
    return batches

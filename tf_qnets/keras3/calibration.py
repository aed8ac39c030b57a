"""Calibration data for the Keras 3 path: whatever the user passes, as a list of input batches.

The accepted forms and the checks are :mod:`tf_qnets.core.calibration_data`'s: a NumPy array of
inputs, an ``(x, y)`` tuple, or any iterable of batches (a list, a ``keras.utils.PyDataset``,
a ``tf.data.Dataset`` under the TensorFlow backend, a generator) of inputs or
``(inputs, labels, ...)``. A model with several inputs takes a list of arrays (in the order
of ``model.inputs``) or a dict keyed by the input names wherever one array would go.

Example::

    batches = calibration_batches(x_train[:512], model)           # 16 batches of 32
    batches = calibration_batches({"image": xi, "meta": xm}, two_input_model)
"""

from tf_qnets.core.calibration_data import BATCH_SIZE, input_batches  # noqa: F401 (re-exported)

__all__ = ["calibration_batches"]


def calibration_batches(data, model, argument="calibration_data", max_batches=None):
    """The input batches of ``data`` for ``model`` (NumPy arrays; a list of arrays per batch
    for a model with several inputs); clear errors for empty or mis-shaped data."""
    specs = [(tensor.name, tuple(tensor.shape)) for tensor in model.inputs]
    return input_batches(data, specs, argument, max_batches)

"""The quantization gap on the Keras 2 path (the definition: :mod:`tf_qnets.core.gap`).

``gap = mean_k |soft(x_k) - hard(x_k)| / alpha`` over a sample of at most
``GAP_SAMPLE_SIZE`` elements of each quantized tensor: how far training's forward (the
soft staircase below ``T = 100``) is from the deployed network's (the hard one), in levels.

Every quantizer keeps its latest gap in a variable of its own (not one of the model's
weights: it is not saved and not trained); :func:`quantization_gap` averages them, and
:class:`tf_qnets.TemperatureScheduler` shows that average as ``quant_gap`` in the
progress bar and in the ``History``. Under ``tf.distribute`` each replica measures its own
batch and reading averages the replicas.

Example::

    >>> import numpy as np, tf_qnets, tf_keras
    >>> m = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(3)])
    >>> q = tf_qnets.quantize_model(m, w_bits=2, first_last="low_bit")
    >>> _ = q(np.ones((2, 4), "float32"), training=True)     # one soft forward at T = 1
    >>> tf_qnets.quantization_gap(q) > 0.0
    True
"""

from tensorflow.python.saved_model import save_context

from tf_qnets.core.gap import GAP_SAMPLE_SIZE
from tf_qnets.keras2.backend import tf

__all__ = ["GAP_SAMPLE_SIZE", "gap_variable", "gap_variables", "gap_sample", "gap_reader",
           "record_gap", "records_gap_now", "quantization_gap"]

def gap_variable(name):
    """A scalar float variable holding one quantizer's latest gap (0 until measured).

    Read across replicas it is their mean (``ON_READ`` with ``MEAN``), like a metric.
    """
    return tf.Variable(0.0, trainable=False, name=f"{name}_gap", dtype=tf.float32,
                       synchronization=tf.VariableSynchronization.ON_READ,
                       aggregation=tf.VariableAggregation.MEAN)


def records_gap_now():
    """False while TensorFlow traces functions for a SavedModel: the gap variable is a
    training monitor outside the model's weights, and the saved functions must not use it."""
    return not save_context.in_save_context()


def gap_sample(tensor, role):
    """The elements of ``tensor`` the gap is measured on, as a 1-D tensor.

    ``role="activations"``: the first example of the batch (axis 0); ``"weights"``: the
    whole kernel. Then at most ``GAP_SAMPLE_SIZE`` elements at an even stride when the size
    is known while tracing, else the first ``GAP_SAMPLE_SIZE``. The same selection applied
    to the input and to the output of an elementwise quantizer picks matching elements.
    """
    if role == "activations" and tensor.shape.rank and tensor.shape.rank > 1:
        tensor = tensor[:1]
    flat = tf.reshape(tensor, [-1])
    size = flat.shape[0]
    if size is not None and size > GAP_SAMPLE_SIZE:
        flat = flat[::size // GAP_SAMPLE_SIZE]
    return flat[:GAP_SAMPLE_SIZE]


def record_gap(variable, soft_values, hard_values, alpha):
    """Assign ``mean |soft - hard| / |alpha|`` (0 for an empty sample) to ``variable``."""
    soft_values = tf.cast(soft_values, tf.float32)
    hard_values = tf.cast(hard_values, tf.float32)
    total = tf.reduce_sum(tf.abs(soft_values - hard_values))
    count = tf.cast(tf.size(soft_values), tf.float32)
    scale = tf.maximum(tf.abs(tf.cast(alpha, tf.float32)), 1e-12)
    return variable.assign(tf.math.divide_no_nan(total, count) / scale)


def gap_variables(model):
    """The gap variables of every built tf_qnets quantizer of ``model``."""
    # Local import: the wrapper module imports tfmot, this one only TensorFlow.
    from tf_qnets.keras2.wrapper import quantizer_states

    found = []
    for _, _, _, quantizer, _ in quantizer_states(model):
        variable = getattr(quantizer, "gap", None)
        if variable is not None:
            found.append(variable)
    return found


def gap_reader(model):
    """A compiled function returning the mean of ``model``'s gap variables, or None if it
    has none. One call reads them all (a read per variable would be a call each)."""
    variables = gap_variables(model)
    if not variables:
        return None

    @tf.function
    def read():
        return tf.add_n([v.read_value() for v in variables]) / float(len(variables))

    return read


def quantization_gap(model):
    """The mean over ``model``'s tf_qnets quantizers of their latest gap (see the module).

    Returns a Python float: 0.0 when no quantizer has been through a training step yet.
    """
    read = gap_reader(model)
    return 0.0 if read is None else float(read())

"""``snap_biases`` for a Keras 3 model: its description, then :mod:`tf_qnets.core.bias_lattice`.

Example::

    report = snap_biases(qat)      # TemperatureScheduler does this at the end of fit
"""

from tf_qnets.core.bias_lattice import snap_biases as _snap
from tf_qnets.keras3.describe_network import describe_network

__all__ = ["snap_biases"]


def snap_biases(model):
    """Move the folded biases that the integer file rounds onto its int32 lattice, in
    ``model`` (a Keras 3 :func:`tf_qnets.quantize_model` result); returns a
    :class:`tf_qnets.core.bias_lattice.SnapReport`."""
    return _snap(model, describe_network(model))

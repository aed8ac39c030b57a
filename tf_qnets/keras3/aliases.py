"""String aliases for configured Keras 3 quantizers: ``get_quantizer("qnet_w3")``.

The names are those of the Keras 2 path (one table, :mod:`tf_qnets.core.aliases`):
``qnet_w1`` .. ``qnet_w8`` and ``qnet_w3_uniform`` (weights), ``qnet_a1`` .. ``qnet_a8``
(unsigned activations, {0..2^b - 1}) and ``qnet_a1_signed`` .. ``qnet_a8_signed``; each
gives a new :class:`tf_qnets.keras3.quantizer.QNetsQuantizer` with the alias's levels,
role and gradient. Its ``alpha``, ``beta`` and thresholds start at 1, 1 and the uniform
thresholds (the midpoints between levels) until it is initialised or trained.

Example::

    >>> from tf_qnets.keras3.aliases import get_quantizer
    >>> q = get_quantizer("qnet_w3")
    >>> q.levels.levels, q.role, q.gradient
    ((-4, -2, -1, 0, 1, 2, 4), 'weights', 'smooth')
    >>> get_quantizer("qnet_a2").levels.levels
    (0, 1, 2, 3)
"""

import keras

from tf_qnets.core.aliases import quantizer_aliases, resolve_alias
from tf_qnets.keras3.quantizer import QNetsQuantizer

__all__ = ["get_quantizer", "quantizer_aliases"]


def get_quantizer(identifier):
    """A Keras 3 quantizer from an alias, a serialized config, or a quantizer.

    Args:
      identifier: an alias (e.g. ``"qnet_w3"``, see :func:`quantizer_aliases`): a new
        :class:`QNetsQuantizer`; a dict made by ``keras.saving.serialize_keras_object``
        of a quantizer (deserialized); a :class:`QNetsQuantizer` (returned as is); or
        ``None`` (returns ``None``: no quantization).

    Raises:
      ValueError: unknown alias (the message lists the closest names).
      TypeError: anything else, or a config that does not describe a QNetsQuantizer.
    """
    if identifier is None or isinstance(identifier, QNetsQuantizer):
        return identifier
    if isinstance(identifier, str):
        levels, role, gradient = resolve_alias(identifier)
        return QNetsQuantizer(levels, role=role, gradient=gradient)
    if isinstance(identifier, dict):
        quantizer = keras.saving.deserialize_keras_object(identifier)
        if not isinstance(quantizer, QNetsQuantizer):
            raise TypeError(
                f"`identifier`: the config {identifier!r} does not describe a QNetsQuantizer "
                f"(got {type(quantizer).__name__}).")
        return quantizer
    raise TypeError(
        "`identifier` must be a quantizer alias such as 'qnet_w3', a serialized quantizer "
        f"config (dict), a QNetsQuantizer, or None; got {type(identifier).__name__} "
        f"{identifier!r}.")

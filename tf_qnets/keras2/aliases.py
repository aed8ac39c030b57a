"""String aliases for configured quantizers, in the way larq users write ``"ste_sign"``.

``get_quantizer(identifier)`` turns a name, a serialized config or a quantizer into a
quantizer. The names give the paper's level sets (Yang et al., CVPR 2019, Sec. 4;
see :mod:`tf_qnets.core.levels`):

=====================  ===========================  =============  ==========
alias                  levels                       role           gradient
=====================  ===========================  =============  ==========
``qnet_w1``            {-1, +1}                     weights        ``wide``
``qnet_w2``            {-1, 0, 1}                   weights        ``exact``
``qnet_w3``            {-4, -2, -1, 0, 1, 2, 4}     weights        ``exact``
``qnet_w3_uniform``    {-3, ..., 3}                 weights        ``exact``
``qnet_w4`` .. ``w8``  {-(2^(b-1)-1) .. 2^(b-1)-1}  weights        ``exact``
``qnet_a1`` .. ``a8``  {0, 1, ..., 2^b - 1}         activations    ``smooth``
``qnet_a1_signed``     {-1, +1}                     activations    ``smooth``
``qnet_a2_signed`` ..  {-(2^(b-1)-1) .. 2^(b-1)-1}  activations    ``smooth``
``qnet_a8_signed``
=====================  ===========================  =============  ==========

``wide`` for binary weights follows the authors' release (sigmoid derivative at
T = 1, times T); it is also what :func:`tf_qnets.quantize_model` picks for 1-bit weights.
``smooth`` for activations is :func:`tf_qnets.quantize_model`'s default
``activation_gradient`` (the soft staircase's derivative at ``min(T, 2)``, see
:mod:`tf_qnets.tf.staircase`).
Each call returns a new :class:`tf_qnets.QNetsQuantizer`; its ``alpha``, ``beta`` and
thresholds are set when a model is quantized and calibrated.

Example::

    >>> import tf_qnets
    >>> tf_qnets.get_quantizer("qnet_w3")
    QNetsQuantizer(levels=(-4, -2, -1, 0, 1, 2, 4), role='weights', gradient='exact', train_thresholds=False)
    >>> config = tf_qnets.QNetsQuantizeConfig("kernel", tf_qnets.get_quantizer("qnet_w2"),
    ...                                       tf_qnets.get_quantizer("qnet_a2"))
"""

import difflib

from tf_qnets.keras2 import tfmot

from tf_qnets.keras2.backend import keras
from tf_qnets.core.levels import MAX_BITS, MIN_BITS, activation_levels, weight_levels
from tf_qnets.keras2.quantizer import QNetsQuantizer
from tf_qnets.tf.staircase import DEFAULT_ACTIVATION_GRADIENT

__all__ = ["get_quantizer", "quantizer_aliases"]


def _alias_table():
    """alias -> (levels, role, gradient)."""
    table = {}
    for bits in range(MIN_BITS, MAX_BITS + 1):
        gradient = "wide" if bits == 1 else "exact"
        table[f"qnet_w{bits}"] = (weight_levels(bits), "weights", gradient)
    table["qnet_w3_uniform"] = (weight_levels(3, scheme="uniform"), "weights", "exact")
    for bits in range(MIN_BITS, MAX_BITS + 1):
        for signed, suffix in ((False, ""), (True, "_signed")):
            table[f"qnet_a{bits}{suffix}"] = (activation_levels(bits, signed=signed),
                                              "activations", DEFAULT_ACTIVATION_GRADIENT)
    return table


_ALIASES = _alias_table()


def quantizer_aliases():
    """The names :func:`get_quantizer` accepts, sorted."""
    return sorted(_ALIASES)


def get_quantizer(identifier):
    """A quantizer from an alias, a serialized config, or a quantizer.

    Args:
      identifier: an alias from the module table (e.g. ``"qnet_w3"``); a dict made by
        ``keras.utils.serialize_keras_object(quantizer)``; a tfmot ``Quantizer``
        (returned as is); or ``None`` (returns ``None``, i.e. no quantization).

    Raises:
      ValueError: unknown alias (the message lists the closest names).
      TypeError: anything else.
    """
    if identifier is None or isinstance(identifier, tfmot.Quantizer):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _ALIASES:
            close = difflib.get_close_matches(identifier, list(_ALIASES), n=3)
            hint = f" Did you mean {close}?" if close else ""
            raise ValueError(
                f"Unknown quantizer alias {identifier!r}.{hint} Known aliases: "
                f"{', '.join(quantizer_aliases())}.")
        levels, role, gradient = _ALIASES[identifier]
        return QNetsQuantizer(levels, role=role, gradient=gradient)
    if isinstance(identifier, dict):
        from tf_qnets.keras2.scope import custom_objects

        quantizer = keras.utils.deserialize_keras_object(identifier, custom_objects=custom_objects())
        if not isinstance(quantizer, tfmot.Quantizer):
            raise TypeError(
                f"The config {identifier!r} does not describe a quantizer "
                f"(got {type(quantizer).__name__}).")
        return quantizer
    raise TypeError(
        "`identifier` must be a quantizer alias such as 'qnet_w3', a serialized quantizer "
        f"config (dict), a quantizer, or None; got {type(identifier).__name__} {identifier!r}.")

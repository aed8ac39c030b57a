"""String aliases for configured quantizers, in the way larq users write ``"ste_sign"``.

``get_quantizer(identifier)`` turns a name, a serialized config or a quantizer into a
quantizer. The names give the paper's level sets (Yang et al., CVPR 2019, Sec. 4;
see :mod:`tf_qnets.core.levels`; the table itself is :mod:`tf_qnets.core.aliases`, shared
with the Keras 3 path):

=====================  ===========================  =============  ==========
alias                  levels                       role           gradient
=====================  ===========================  =============  ==========
``qnet_w1``            {-1, +1}                     weights        ``wide``
``qnet_w2``            {-1, 0, 1}                   weights        ``exact``
``qnet_w3``            {-4, -2, -1, 0, 1, 2, 4}     weights        ``smooth``
``qnet_w3_uniform``    {-3, ..., 3}                 weights        ``smooth``
``qnet_w4`` .. ``w8``  {-(2^(b-1)-1) .. 2^(b-1)-1}  weights        ``smooth``
``qnet_a1`` .. ``a8``  {0, 1, ..., 2^b - 1}         activations    ``smooth``
``qnet_a1_signed``     {-1, +1}                     activations    ``smooth``
``qnet_a2_signed`` ..  {-(2^(b-1)-1) .. 2^(b-1)-1}  activations    ``smooth``
``qnet_a8_signed``
=====================  ===========================  =============  ==========

``wide`` for binary weights follows the authors' release (sigmoid derivative at
T = 1, times T); the weights' gradients are those :func:`tf_qnets.quantize_model` picks
(``smooth`` from 3 bits on: docs/train.md, "The weights' backward").
``smooth`` for activations is :func:`tf_qnets.quantize_model`'s default
``activation_gradient`` (the soft staircase's derivative at ``min(T, 2)``, see
:mod:`tf_qnets.tf.staircase`).
Each call returns a new :class:`tf_qnets.QNetsQuantizer`; its ``alpha``, ``beta`` and
thresholds are set when a model is quantized and calibrated.

Example::

    >>> import tf_qnets
    >>> tf_qnets.get_quantizer("qnet_w3")
    QNetsQuantizer(levels=(-4, -2, -1, 0, 1, 2, 4), role='weights', gradient='smooth', train_thresholds=False, implementation='xla', hard_forward_from=100.0)
    >>> config = tf_qnets.QNetsQuantizeConfig("kernel", tf_qnets.get_quantizer("qnet_w2"),
    ...                                       tf_qnets.get_quantizer("qnet_a2"))
"""

from tf_qnets.keras2 import tfmot

from tf_qnets.keras2.backend import keras
from tf_qnets.core.aliases import quantizer_aliases, resolve_alias
from tf_qnets.keras2.quantizer import QNetsQuantizer

__all__ = ["get_quantizer", "quantizer_aliases"]


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
        levels, role, gradient = resolve_alias(identifier)
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

"""The one table of quantizer aliases: name -> (levels, role, gradient), for every framework path.

``tf_qnets.keras2.aliases`` and ``tf_qnets.keras3.aliases`` build their own quantizer
objects from the same entries, so ``get_quantizer("qnet_w3")`` means the same staircase in
Keras 2 and Keras 3. The level sets are the paper's (Yang et al., CVPR 2019, Sec. 4;
:mod:`tf_qnets.core.levels`):

* ``qnet_w<b>``, b = 1..8: ``weight_levels(b)`` (1: {-1, +1}, 2: {-1, 0, 1},
  3: {-4, -2, -1, 0, 1, 2, 4}, 4..8: {-(2^(b-1)-1) .. 2^(b-1)-1}), role ``weights``,
  gradient as :func:`tf_qnets.quantize_model` picks it
  (:func:`tf_qnets.core.staircase.default_weight_gradient`): ``wide`` for b = 1 (the
  authors' release), ``exact`` for b = 2, ``smooth`` from b = 3 on;
* ``qnet_w3_uniform``: {-3..3}, ``weights``, ``smooth``;
* ``qnet_a<b>`` / ``qnet_a<b>_signed``, b = 1..8: ``activation_levels(b, signed)``
  ({0..2^b - 1} / a symmetric signed set), role ``activations``, gradient
  :data:`tf_qnets.core.staircase.DEFAULT_ACTIVATION_GRADIENT` (``smooth``).

Example::

    >>> from tf_qnets.core.aliases import resolve_alias
    >>> spec = resolve_alias("qnet_w3")
    >>> spec.levels.levels, spec.role, spec.gradient
    ((-4, -2, -1, 0, 1, 2, 4), 'weights', 'smooth')
    >>> resolve_alias("qnet_a2_signed").levels.levels
    (-1, 0, 1)
"""

import difflib
import types
import typing

from tf_qnets.core.levels import MAX_BITS, MIN_BITS, LevelSet, activation_levels, weight_levels
from tf_qnets.core.staircase import DEFAULT_ACTIVATION_GRADIENT, default_weight_gradient

__all__ = ["ALIASES", "QuantizerAlias", "quantizer_aliases", "resolve_alias"]


class QuantizerAlias(typing.NamedTuple):
    """What an alias stands for: the quantizer's level set, role and backward."""

    levels: LevelSet
    role: str
    gradient: str


def _alias_table():
    table = {}
    for bits in range(MIN_BITS, MAX_BITS + 1):
        levels = weight_levels(bits)
        table[f"qnet_w{bits}"] = QuantizerAlias(levels, "weights",
                                                default_weight_gradient(levels.num_steps))
    uniform = weight_levels(3, scheme="uniform")
    table["qnet_w3_uniform"] = QuantizerAlias(uniform, "weights",
                                              default_weight_gradient(uniform.num_steps))
    for bits in range(MIN_BITS, MAX_BITS + 1):
        for signed, suffix in ((False, ""), (True, "_signed")):
            table[f"qnet_a{bits}{suffix}"] = QuantizerAlias(
                activation_levels(bits, signed=signed), "activations", DEFAULT_ACTIVATION_GRADIENT)
    return types.MappingProxyType(table)


#: alias -> :class:`QuantizerAlias` (read-only).
ALIASES = _alias_table()


def quantizer_aliases():
    """The alias names, sorted."""
    return sorted(ALIASES)


def resolve_alias(name):
    """The :class:`QuantizerAlias` of ``name``.

    Raises:
      ValueError: ``name`` is not an alias; the message lists the closest names and all of them.
    """
    if name not in ALIASES:
        close = difflib.get_close_matches(name, list(ALIASES), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"Unknown quantizer alias {name!r}.{hint} Known aliases: "
            f"{', '.join(quantizer_aliases())}.")
    return ALIASES[name]

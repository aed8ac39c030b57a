"""The staircase of Quantization Networks in numpy: the definition every backend implements.

Notation (Yang et al., "Quantization Networks", CVPR 2019, Sec. 3; docs: ../shared/method.md):
levels ``y_0 < ... < y_n``, step heights ``s_i = y_i - y_{i-1}``, offset ``o = -y_0``,
thresholds ``b_1 < ... < b_n`` in the beta-scaled domain, input scale ``beta``, output scale
``alpha``, temperature ``T``.

Hard (inference) form, strict ``>``::

    code(x) = -o + sum_i s_i [beta x > b_i]          (an integer: one of the levels)
    y       = alpha * code(x)

Soft (training) form, with the authors' clamp of the sigmoid argument at ``+-CLAMP``::

    y = alpha * ( sum_i s_i sigmoid(clip(T (beta x - b_i), -10, 10)) - o )

Its derivative ``dy/dx = alpha beta T sum_i s_i d_i`` (``d_i = sigma_i (1 - sigma_i)``
inside the clamp, 0 outside) is what ``gradient="exact"`` back-propagates. ``"wide"``
evaluates ``d_i`` at temperature 1 and still multiplies by ``T`` (the authors' backward for
binary weights); ``"smooth"`` evaluates the whole derivative at ``T_g = min(T, 2)``
(:func:`gradient_temperatures`). The backends (``tf_qnets.tf.staircase``,
``tf_qnets.keras3.staircase``) compute the same values fast; this module is the plain sum.

Example::

    >>> import numpy as np
    >>> from tf_qnets.core.levels import weight_levels
    >>> hard_staircase(np.array([-0.3, 0.01, 0.2]), 0.5, 1.0, [-0.05, 0.05], weight_levels(2))
    array([-0.5,  0. ,  0.5], dtype=float32)
"""

import numpy as np

__all__ = [
    "CLAMP",
    "DEFAULT_ACTIVATION_GRADIENT",
    "default_weight_gradient",
    "GRADIENTS",
    "SMOOTH_TEMPERATURE",
    "gradient_temperatures",
    "hard_codes",
    "hard_staircase",
    "soft_staircase",
]

CLAMP = 10.0
GRADIENTS = ("exact", "wide", "smooth")
# The smooth gradient's evaluation temperature cap (docs/train.md).
SMOOTH_TEMPERATURE = 2.0
# What quantize_model uses for activations unless told otherwise.
DEFAULT_ACTIVATION_GRADIENT = "smooth"


def default_weight_gradient(num_steps):
    """The weight quantizers' backward unless told otherwise, by the number of thresholds:
    ``"wide"`` for binary weights (1, the authors' release), ``"exact"`` for ternary ones (2:
    the smooth backward scored lower there), ``"smooth"`` for 3 bits and more (it scored the
    same or higher in every setting measured: docs/train.md, "The weights' backward").

    >>> default_weight_gradient(1), default_weight_gradient(2), default_weight_gradient(6)
    ('wide', 'exact', 'smooth')
    """
    if num_steps <= 1:
        return "wide"
    return "exact" if num_steps == 2 else "smooth"


def gradient_temperatures(gradient, temperature):
    """``(T_slope, factor)``: the backward evaluates ``d_i`` at ``T_slope`` and multiplies
    the sum by ``factor``: exact ``(T, T)``, wide ``(1, T)``, smooth ``(T_g, T_g)`` with
    ``T_g = min(T, SMOOTH_TEMPERATURE)``."""
    if gradient not in GRADIENTS:
        raise ValueError(f"`gradient` must be one of {GRADIENTS}, got {gradient!r}.")
    if gradient == "wide":
        return 1.0, temperature
    if gradient == "smooth":
        smooth = min(float(temperature), SMOOTH_TEMPERATURE)
        return smooth, smooth
    return temperature, temperature


def hard_codes(x, beta, thresholds, levels):
    """Integer codes ``-o + sum_i s_i [beta x > b_i]`` (int64, ``x``'s shape).

    The decision ``beta x > b_i`` is taken in float32, as the Keras layers take it.
    NaN counts below every threshold (callers that keep NaN mask it themselves).
    """
    u = np.float32(beta) * np.asarray(x, np.float32)
    codes = np.full(u.shape, -levels.offset, dtype=np.int64)
    for b_i, s_i in zip(np.asarray(thresholds, np.float32).ravel(), levels.steps):
        codes += s_i * (u > b_i)
    return codes


def hard_staircase(x, alpha, beta, thresholds, levels):
    """``alpha * code(x)`` in float32; NaN in gives NaN out, ``+-inf`` the end levels."""
    x = np.asarray(x, np.float32)
    y = np.float32(alpha) * hard_codes(x, beta, thresholds, levels).astype(np.float32)
    return np.where(np.isnan(x), x, y).astype(np.float32)


def soft_staircase(x, alpha, beta, thresholds, temperature, levels):
    """The soft staircase as the plain sum over all ``n`` thresholds (float64)."""
    u = float(beta) * np.asarray(x, np.float64)
    total = np.zeros_like(u)
    for b_i, s_i in zip(np.asarray(thresholds, np.float64).ravel(), levels.steps):
        z = np.clip(float(temperature) * (u - b_i), -CLAMP, CLAMP)
        total = total + s_i / (1.0 + np.exp(-z))
    return float(alpha) * (total - levels.offset)

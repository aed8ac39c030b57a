"""Pinned weights: integer codes of a trained kernel and the per-channel scales that keep them exact.

For a kernel ``W`` with a tf_qnets weight quantizer (levels ``y``, thresholds ``b``,
scales ``alpha``, ``beta``) the hard staircase stores the code

    code(w) = -o + sum_i s_i [beta * w > b_i]           (computed in float32, as Keras does)

and the layer computes with ``alpha * code``. A following BatchNormalization is folded
into the kernel per output channel ``c``::

    g_c = gamma_c / sqrt(var_c + eps)
    W'  = alpha * g_c * code          b' = (b - mean_c) * g_c + beta_bn_c

so a per-channel fake-quantization range of ``+- q_max * alpha * |g_c|``
(``q_max = 127`` at 8 bits, ``7`` at 4 bits, narrow range) makes the int8/int4
weight that TFLite stores equal to ``sign(g_c) * code``: exactly a level.

Example::

    >>> import numpy as np
    >>> from tf_qnets.core.levels import weight_levels
    >>> qnets_codes(np.array([-0.3, 0.01, 0.2], np.float32), 1.0, [-0.05, 0.05], weight_levels(2))
    array([-1,  0,  1])
"""

import dataclasses

import numpy as np

from tf_qnets.core.staircase import hard_codes

__all__ = ["PinnedKernel", "qnets_codes", "bn_fold_factors", "pin_qnets_kernel", "pin_int8_kernel",
           "pin_float_kernel"]


@dataclasses.dataclass
class PinnedKernel:
    """A kernel ready for the export graph.

    ``kernel`` is the real-valued kernel the device must reproduce, ``range_min`` /
    ``range_max`` the per-channel (last axis) or scalar fake-quant range, ``num_bits``
    8 or 4, and ``codes`` the integer codes TFLite will store (``None`` for layers
    outside the low-bit scheme).
    """

    kernel: np.ndarray
    bias: np.ndarray
    range_min: np.ndarray
    range_max: np.ndarray
    num_bits: int
    codes: np.ndarray = None
    levels: tuple = None


def qnets_codes(kernel, beta, thresholds, levels):
    """Integer codes of the hard staircase, ``-o + sum_i s_i [beta w > b_i]`` (float32 decisions)."""
    return hard_codes(kernel, beta, thresholds, levels)


def bn_fold_factors(mean, variance, epsilon, gamma=None, beta=None):
    """``(g, shift)`` with ``BN(z) = g * z + shift`` per channel (inference statistics):
    ``g = gamma / sqrt(variance + epsilon)``, ``shift = beta - mean * g`` (float64);
    a BatchNormalization without scale or center has ``gamma = 1`` or ``beta = 0``."""
    mean = np.asarray(mean, np.float64)
    gamma = np.ones_like(mean) if gamma is None else np.asarray(gamma, np.float64)
    beta = np.zeros_like(mean) if beta is None else np.asarray(beta, np.float64)
    g = gamma / np.sqrt(np.asarray(variance, np.float64) + float(epsilon))
    return g, beta - mean * g


def _fold(kernel_real, bias, fold):
    channels = kernel_real.shape[-1]
    if bias is None:
        bias = np.zeros(channels)
    if fold is None:
        return kernel_real.astype(np.float32), np.asarray(bias, np.float32), np.ones(channels)
    g, shift = fold
    folded = kernel_real.astype(np.float64) * g
    return folded.astype(np.float32), (bias * g + shift).astype(np.float32), g


def pin_qnets_kernel(kernel, bias, alpha, beta, thresholds, levels, fold=None, int4="auto"):
    """Pin a low-bit kernel: see the module docstring. ``int4``: ``"auto"``, True or False."""
    codes = qnets_codes(kernel, beta, thresholds, levels)
    max_code = int(np.max(np.abs(levels.levels)))
    use_int4 = (int4 == "auto" and max_code <= 7) or int4 is True
    if int4 is True and max_code > 7:
        raise ValueError(
            f"`int4_weights=True` but a layer has levels up to {max_code}; INT4 holds codes "
            "-7..7 only. Use int4_weights='auto' or False.")
    q_max = 7 if use_int4 else 127
    alpha = float(alpha)
    real = alpha * codes.astype(np.float64)
    folded, new_bias, g = _fold(real, bias, fold)
    step = alpha * np.abs(g)
    step = np.where(step > 0, step, alpha)
    return PinnedKernel(folded, new_bias, (-q_max * step).astype(np.float32),
                        (q_max * step).astype(np.float32), 4 if use_int4 else 8,
                        codes=codes, levels=tuple(levels.levels))


def pin_int8_kernel(quantized_kernel, bias, range_min, range_max, fold=None):
    """Pin an 8-bit (tfmot FakeQuant) kernel: Keras' fake-quantized kernel, scaled by the BN fold."""
    folded, new_bias, g = _fold(np.asarray(quantized_kernel, np.float64), bias, fold)
    lo = np.asarray(range_min, np.float64) * np.ones_like(g)
    hi = np.asarray(range_max, np.float64) * np.ones_like(g)
    new_lo = np.minimum(lo * g, hi * g)
    new_hi = np.maximum(lo * g, hi * g)
    zero = new_hi - new_lo <= 0
    new_lo = np.where(zero, lo, new_lo)
    new_hi = np.where(zero, hi, new_hi)
    if np.ndim(range_min) == 0 and fold is None:
        new_lo, new_hi = np.asarray(range_min), np.asarray(range_max)
    return PinnedKernel(folded, new_bias, new_lo.astype(np.float32), new_hi.astype(np.float32), 8)


def pin_float_kernel(kernel, bias, fold=None):
    """A kernel the Keras model kept float: ordinary symmetric per-channel int8 (``+-max|w_c|``)."""
    folded, new_bias, _ = _fold(np.asarray(kernel, np.float64), bias, fold)
    bound = np.max(np.abs(folded.reshape(-1, folded.shape[-1])), axis=0)
    bound = np.maximum(bound, 1e-8).astype(np.float32)
    return PinnedKernel(folded, new_bias, -bound, bound, 8)

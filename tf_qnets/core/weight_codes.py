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

from tf_qnets.core.layer_kinds import KERNEL_ATTRIBUTES
from tf_qnets.core.network import Int8Range, Staircase
from tf_qnets.core.staircase import hard_codes

__all__ = ["PinnedKernel", "qnets_codes", "bn_fold_factors", "layer_fold_factors", "pin_qnets_kernel",
           "pin_int8_kernel", "pin_float_kernel", "pin_layer_kernel", "finer_code_factor", "finer_codes",
           "weight_steps", "stored_codes"]


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


def layer_fold_factors(bn_layer):
    """:func:`bn_fold_factors` of a described BatchNormalization
    (:class:`tf_qnets.core.network.LayerDescription`), from its inference statistics."""
    weights = bn_layer.weights
    return bn_fold_factors(weights["moving_mean"], weights["moving_variance"],
                           bn_layer.config.get("epsilon", 1e-3), weights.get("gamma"),
                           weights.get("beta"))


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


def pin_layer_kernel(layer, bn=None, int4_weights=False):
    """``(PinnedKernel, depthwise_shape)`` of a described kernel layer (``bn``: the described
    BatchNormalization folded into it, or None), by its weight quantizer: a staircase
    (:func:`pin_qnets_kernel`), an 8-bit range (:func:`pin_int8_kernel`) or none
    (:func:`pin_float_kernel`). A ``DepthwiseConv2D`` kernel is pinned as ``(kh, kw, 1, C)``
    (one scale per output channel ``c = input channel * multiplier + m``) and
    ``depthwise_shape`` is its Keras shape; None for other layers."""
    class_name = layer.class_name
    weight_q = layer.weight_quantizer
    kernel = np.asarray(layer.weights["kernel"])
    bias = layer.weights.get("bias") if layer.config.get("use_bias", False) else None
    depthwise_shape = None
    if class_name not in KERNEL_ATTRIBUTES:
        raise ValueError(f"Layer {layer.name!r} ({class_name}) is not a kernel layer.")
    if class_name == "DepthwiseConv2D":
        depthwise_shape = kernel.shape
        kernel = kernel.reshape(kernel.shape[0], kernel.shape[1], 1, -1)
    fold = layer_fold_factors(bn) if bn is not None else None
    if isinstance(weight_q, Staircase):
        # INT4 depthwise kernels need DEPTHWISE_CONV_2D version 7, which TFLite's reference
        # kernels and tflite-runtime 2.14 lack; depthwise kernels are small: int8.
        int4 = False if depthwise_shape is not None else int4_weights
        pinned = pin_qnets_kernel(kernel, bias, weight_q.alpha, weight_q.beta,
                                  weight_q.thresholds, weight_q.levels, fold, int4)
    elif isinstance(weight_q, Int8Range):
        pinned = pin_int8_kernel(np.asarray(weight_q.kernel).reshape(kernel.shape), bias,
                                 weight_q.lo, weight_q.hi, fold)
    elif weight_q is None:
        pinned = pin_float_kernel(kernel, bias, fold)
    else:
        raise ValueError(
            f"Layer {layer.name!r}: its weight quantizer {weight_q!r} cannot be exported "
            "(export lowers staircases and 8-bit ranges).")
    return pinned, depthwise_shape


def finer_code_factor(pinned):
    """``k = 127 // max |level|``: the factor :func:`finer_codes` stores each code with."""
    return 127 // max(1, int(np.max(np.abs(pinned.levels))))


def finer_codes(pinned):
    """``pinned`` stored in int8 as ``k * code`` (``k``: :func:`finer_code_factor`): the same
    real kernel, a ``k`` times finer weight scale."""
    k = finer_code_factor(pinned)
    q_max = 2 ** (pinned.num_bits - 1) - 1
    factor = 127.0 / (k * q_max)   # new range +-127 steps of (old step / k)
    return dataclasses.replace(
        pinned, range_min=(np.asarray(pinned.range_min, np.float64) * factor).astype(np.float32),
        range_max=(np.asarray(pinned.range_max, np.float64) * factor).astype(np.float32),
        num_bits=8)


def weight_steps(pinned):
    """Per-output-channel weight scale of a pinned (symmetric, narrow-range) kernel."""
    q_max = 2 ** (pinned.num_bits - 1) - 1
    span = np.asarray(pinned.range_max, np.float64) - np.asarray(pinned.range_min, np.float64)
    return np.broadcast_to(span / (2.0 * q_max), np.shape(pinned.bias))


def stored_codes(pinned):
    """The integer codes a file stores for ``pinned`` (any kernel, also one outside the
    low-bit scheme): ``round(kernel / s_c)`` with ``s_c`` its :func:`weight_steps`
    (a channel of step 0 keeps its kernel, all zeros), as float64."""
    steps = weight_steps(pinned)
    return np.round(np.asarray(pinned.kernel, np.float64) / np.where(steps > 0, steps, 1.0))

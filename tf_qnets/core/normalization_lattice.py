"""A Normalization's offset on the integer file's int32 lattice, so that Keras adds what the file adds.

A ``Normalization`` with per-channel mean ``mu_c`` and variance ``v_c`` computes

    y_c = (x_c - mu_c) / sigma_c = g_c x_c + h_c,    sigma_c = max(sqrt(v_c), eps),
    g_c = 1 / sigma_c,   h_c = -mu_c / sigma_c.

The integer file computes it as a 1x1 depthwise convolution
(:mod:`tf_qnets.export.rewrites.channel_affine`): int8 weight ``+-127`` at the scale
``|g_c| / 127`` and the int32 bias

    B_c = round(h_c / u_c),     u_c = s_in |g_c| / 127,

with ``s_in`` the int8 scale of the layer's input (the ``Rescaling`` before it). The file thus
adds ``u_c B_c``, up to ``u_c / 2`` (a 254th of an input step) away from the Keras ``h_c``;
an output value that close to an int8 rounding boundary rounds differently, and the
difference carries through the network (EfficientNet with ImageNet statistics: about one
output value in a thousand). Moving the mean to

    mu_c  ->  -sigma_c u_c round(h_c / u_c)

puts ``h_c`` on the lattice (a change of at most ``s_in / 254`` in the mean, far below one input
step) and makes the file's bias exact. That needs the mean in a variable: a ``Normalization``
built with constant statistics (``Normalization(mean=..., variance=...)``, as
``keras.applications.EfficientNetV2*`` builds it) is rebuilt by ``quantize_model`` with the
same statistics in its variables (:func:`statistics_in_variables`).

Example::

    >>> import numpy as np
    >>> mean = snapped_mean(np.array([0.485]), np.array([0.229 ** 2]), input_scale=1 / 255)
    >>> h = -mean / 0.229; unit = (1 / 255) / 0.229 / 127
    >>> bool(abs(h / unit - np.round(h / unit)) < 1e-6), bool(abs(mean[0] - 0.485) < 1 / 255 / 254)
    (True, True)
"""

import numpy as np

__all__ = ["NORMALIZATION_EPSILON", "normalization_factors", "offset_unit", "snapped_mean",
           "statistics_in_variables"]

# Keras' default epsilon (both Kerases), the floor of a Normalization's standard deviation.
NORMALIZATION_EPSILON = 1e-7


def normalization_factors(mean, variance):
    """``(g, h)`` with ``Normalization(x) = g x + h`` per channel (float64)."""
    mean = np.asarray(mean, np.float64).reshape(-1)
    sigma = np.maximum(np.sqrt(np.asarray(variance, np.float64).reshape(-1)),
                       NORMALIZATION_EPSILON)
    return 1.0 / sigma, -mean / sigma


def offset_unit(variance, input_scale):
    """``u_c = s_in |g_c| / 127``: the int32 unit of the file's bias for each channel."""
    g, _ = normalization_factors(np.zeros_like(np.asarray(variance, np.float64)), variance)
    return float(input_scale) * g / 127.0


def snapped_mean(mean, variance, input_scale):
    """The mean (float64, one per channel) whose offset ``h_c`` is on the lattice of
    :func:`offset_unit`, nearest to ``mean``."""
    g, h = normalization_factors(mean, variance)
    unit = offset_unit(variance, input_scale)
    return -np.round(h / unit) * unit / g


def statistics_in_variables(config, input_shape):
    """For the config of a ``Normalization`` built with constant statistics over the last axis:
    ``(config, [mean, variance])``, the config of the same layer without them (so that it
    keeps them in variables, as an adapted one does) and the per-channel float32 values to load
    into those variables; None for any other config (statistics already in variables, another
    axis, ``invert=True``).

    >>> config, values = statistics_in_variables(
    ...     {"name": "n", "axis": -1, "mean": [0.5, 0.4], "variance": 0.04}, (None, 8, 8, 2))
    >>> config["mean"], [[round(float(a), 3) for a in v] for v in values]
    (None, [[0.5, 0.4], [0.04, 0.04]])
    """
    if config.get("mean") is None or config.get("variance") is None or config.get("invert"):
        return None
    axis = config.get("axis", -1)
    axis = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
    rank = len(tuple(input_shape))
    if len(axis) != 1 or int(axis[0]) % rank != rank - 1 or input_shape[-1] is None:
        return None
    channels = int(input_shape[-1])
    values = [np.broadcast_to(np.asarray(config[key], np.float32).reshape(-1)
                              if np.size(config[key]) > 1 else np.float32(config[key]),
                              (channels,)).astype(np.float32)
              for key in ("mean", "variance")]
    config = dict(config, mean=None, variance=None)
    return config, values

"""Independent numpy references for the Keras 3 staircase tests: values (tf_qnets.core, float64
soft / float32 hard) and the analytic gradients of method.md Sec. 2 (with the clamp and the gradient options)."""

import numpy as np

from tf_qnets.core import staircase as core_staircase

CLAMP = 10.0


def _sigmoid(z):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


# Values: the numpy reference of tf_qnets.core (the plain sum over all thresholds).
hard = core_staircase.hard_staircase
soft = core_staircase.soft_staircase


def slope_temperatures(gradient, temperature):
    if gradient == "wide":
        return 1.0, temperature
    if gradient == "smooth":
        return min(temperature, 2.0), min(temperature, 2.0)
    return temperature, temperature


def gradients(x, upstream, alpha, beta, thresholds, temperature, levels, gradient="exact"):
    """``(dL/dx, dL/dalpha, dL/dbeta, dL/db)`` of ``L = sum(upstream * soft(x))``."""
    x = np.asarray(x, np.float64)
    upstream = np.asarray(upstream, np.float64)
    t_s, factor = slope_temperatures(gradient, temperature)
    u = beta * x
    per_threshold = []
    for s, b in zip(levels.steps, thresholds):
        z = t_s * (u - b)
        sig = _sigmoid(z)
        per_threshold.append(np.where(np.abs(z) <= CLAMP, s * sig * (1.0 - sig), 0.0))
    slope = sum(per_threshold)
    d_x = upstream * alpha * beta * factor * slope
    d_beta = np.sum(upstream * alpha * np.where(np.isfinite(x), x, 0.0) * factor * slope)
    codes = soft(x, 1.0, beta, thresholds, temperature, levels)
    d_alpha = np.sum(upstream * codes)
    d_b = np.array([-np.sum(upstream * alpha * factor * d) for d in per_threshold])
    return d_x, d_alpha, d_beta, d_b

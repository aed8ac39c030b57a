"""Sums the file rounds in an ADD: kept clear of the boundaries where float32 and the file part.

Two kinds of addition of int8 tensors end in the ADD's own requantization in the file:

* a uniform staircase on the ReLU after an ``Add`` (a ResNet block output,
  :mod:`tf_qnets.export.rewrites.add_staircase`): output code ``round(beta (a + b))``,
  clipped to ``0 .. n``; Keras passes level ``i`` where ``beta (a + b) > b_i`` (``b_i`` the
  threshold, ``i - 1/2`` for a uniform staircase; the file rounds at ``i - 1/2``);
* an ``Add`` with its own int8 range (a ResNetV2 block output): ``round((a + b) / s)`` in
  steps ``s``; Keras' fake-quantization rounds the same float32 sum.

Each int8 input holds ``a = s_a c_a`` (``c_a`` its code less the zero point, ``s_a`` its
scale), so the sum, in output codes, takes only the values

    u = beta (s_a c_a + s_b c_b),        c_a, c_b over the inputs' codes

(``beta = 1 / s`` for an int8 range). XNNPACK's ADD multiplies each input's codes by a 20-bit
integer multiplier (``r = s beta`` on a grid of ``2**-20 r_max``), so it is off by up to
``2**-21 r_max (|c_a| + |c_b|)`` output codes; Keras adds in float32. A reachable sum closer
to a boundary (a transition, a half-integer) than

    slack = 2**-20 r_max (|c_a| + |c_b| + 2) + 1e-6 (|u| + 1)

(twice the first bound, and some fifty float32 roundings) is decided by each side on its own:
a random ResNet101 at 32x32 had one sum 2.5e-7 codes from a transition in its ninth conv4
block (64 of 131,072 codes apart there, then most of the network downstream), and a
ResNet50V2 14 to 28 of the 65,536 sums of each block output within their slack.

Scaling ``beta`` (or the output step) by ``1 + e`` moves every sum by ``e u``:
:func:`beta_factor` and :func:`step_factor` find the smallest ``|e|`` (up to
:data:`MAX_RELATIVE_CHANGE`) that leaves no reachable sum within its slack of a boundary, or,
where none does, the one that leaves the fewest. ``snap_biases`` (so ``quantize_model`` and
``TemperatureScheduler``) applies it, addition by addition in network order (an output range
is the next addition's input scale); the model changes by at most a thousandth of that
scale (ResNet50V2's block output ranges moved by up to 0.97 thousandths; in both networks
above, and in ResNet50, no sum is left within its slack).

Example::

    >>> import numpy as np
    >>> u, slack = np.array([8.4999997]), np.array([1e-4])     # one sum, in output codes
    >>> factor, before, after = beta_factor(u, slack, np.arange(15) + 0.5, 1.8803153)
    >>> before, after, round(abs(factor - 1) * 1e6)    # 1e-4 / 8.5 = 12 millionths
    (1, 0, 12)
"""

import dataclasses

import numpy as np

from tf_qnets.core.lowering import has_saturating_lowering, is_uniform_staircase
from tf_qnets.core.network import Int8Range, Staircase, relu_cap
from tf_qnets.core.network_graph import INT8_KEEPING_LAYERS, graph_of, is_identity_normalization

__all__ = ["AddRounding", "MAX_RELATIVE_CHANGE", "add_roundings", "beta_factor",
           "is_add_staircase", "range_values", "staircase_values", "step_factor", "sum_grid"]

# The largest relative change of ``beta`` tried (a thousandth: ten times the int8 step of a
# 4-bit staircase's top level, far below anything training resolves).
MAX_RELATIVE_CHANGE = 1e-3
# XNNPACK's ADD multipliers: 20 bits below the largest input-to-output scale ratio.
_MULTIPLIER_BITS = 20
# Keras' float32 sum, product and comparison, with room to spare, relative to ``|u|``.
_FLOAT_SLACK = 1e-6
# How far inside a free interval of ``e`` to go, relative: the float32 ``beta`` lands there.
_CUSHION = 2e-7


def sum_grid(inputs, beta):
    """``(u, slack)`` over every pair of input codes: the sums in output codes and each one's
    slack (module docstring). ``inputs``: one ``(scale, codes)`` per input of the addition,
    ``codes`` the integers (less the zero point) the input can hold."""
    scales = [float(scale) for scale, _ in inputs]
    r_max = max(abs(scale) * beta for scale in scales)
    values = np.zeros(1)
    magnitudes = np.zeros(1)
    for scale, codes in inputs:
        codes = np.asarray(codes, np.float64).ravel()
        values = (values[:, None] + scale * codes[None, :]).ravel()
        magnitudes = (magnitudes[:, None] + np.abs(codes)[None, :]).ravel()
    u = beta * values
    slack = 2.0 ** -_MULTIPLIER_BITS * r_max * (magnitudes + 2.0) + _FLOAT_SLACK * (np.abs(u) + 1.0)
    return u, slack


def _blocked_intervals(u, slack, low, high, max_relative):
    """``(starts, ends)``: the relative changes ``e`` that put a sum ``u (1 + e)`` within its
    slack of a boundary interval ``[low, high]`` (``[N, K]`` per sum: a transition ``b_i``
    and the file's rounding point ``i - 1/2``, or one half-integer twice)."""
    u = u[:, None]
    slack = slack[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        one = (low - slack) / u - 1.0
        other = (high + slack) / u - 1.0
    start, end = np.minimum(one, other), np.maximum(one, other)
    near = (u != 0) & (end >= -max_relative) & (start <= max_relative)
    return start[near], end[near]


def _coverage(points, starts, ends):
    """How many intervals ``[start, end]`` hold each point."""
    starts, ends = np.sort(starts), np.sort(ends)
    return (np.searchsorted(starts, points, side="right")
            - np.searchsorted(ends, points, side="left"))


def _least_conflicts(starts, ends, value, max_relative):
    """``(factor, before, after)`` for the intervals of :func:`_blocked_intervals` (see
    :func:`beta_factor`); ``value``: the float32 number the factor multiplies."""
    before = int(_coverage(np.zeros(1), starts, ends)[0])
    if before == 0:
        return 1.0, 0, 0
    cushion = max(_CUSHION, 4.0 * np.finfo(np.float32).eps)
    edges = np.concatenate([starts - cushion, ends + cushion])
    candidates = edges[np.abs(edges) <= max_relative]
    if candidates.size == 0:
        return 1.0, before, before
    # a candidate counts the intervals within the float32 landing of it, either side
    landing = 2.0 * np.finfo(np.float32).eps
    counts = np.max([_coverage(candidates + shift, starts, ends)
                     for shift in (-landing, 0.0, landing)], axis=0)
    best = np.flatnonzero(counts == counts.min())
    choice = best[np.argmin(np.abs(candidates[best]))]
    if counts[choice] >= before:
        return 1.0, before, before
    factor = float(np.float32(value * (1.0 + candidates[choice])) / np.float32(value))
    after = int(_coverage(np.array([factor - 1.0]), starts, ends)[0])
    if after >= before:       # float32 could not land inside the interval
        return 1.0, before, before
    return factor, before, after


def beta_factor(u, slack, thresholds, beta, max_relative=MAX_RELATIVE_CHANGE):
    """``(factor, conflicts before, conflicts after)``: the factor ``1 + e`` on a staircase's
    ``beta`` with the fewest reachable sums within their slack of a transition (none where
    possible), the smallest ``|e|`` among those (1 where nothing conflicts).

    Args:
      u: the sums in output codes at the current ``beta`` (:func:`sum_grid`).
      slack: each sum's slack, in output codes.
      thresholds: the staircase's ``b_i`` (ascending; uniform: ``i - 1/2``): level ``i``
        passes between ``b_i`` and the file's ``i - 1/2``.
      beta: the staircase's input scale (the float32 value the factor multiplies).
      max_relative: the largest ``|e|`` tried.
    """
    u = np.asarray(u, np.float64).ravel()
    slack = np.asarray(slack, np.float64).ravel()
    thresholds = np.asarray(thresholds, np.float64).ravel()
    rounding_points = np.arange(1, len(thresholds) + 1) - 0.5
    low = np.broadcast_to(np.minimum(thresholds, rounding_points), (u.size, thresholds.size))
    high = np.broadcast_to(np.maximum(thresholds, rounding_points), (u.size, thresholds.size))
    keep = u > 0            # a sum at or below 0 is level 0 on both sides
    starts, ends = _blocked_intervals(u[keep], slack[keep], low[keep], high[keep], max_relative)
    return _least_conflicts(starts, ends, beta, max_relative)


def step_factor(u, slack, step, max_relative=MAX_RELATIVE_CHANGE):
    """``(factor, conflicts before, conflicts after)``: the factor ``1 + e`` on the sums ``u``
    (in int8 steps of an int8 output, :func:`sum_grid` with ``1 / step``) with the fewest
    within their slack of a half-integer (the output's rounding boundaries), the smallest
    ``|e|`` among those. The output step becomes ``step / factor``."""
    u = np.asarray(u, np.float64).ravel()
    slack = np.asarray(slack, np.float64).ravel()
    nearest = np.floor(u)[:, None] + np.array([-0.5, 0.5, 1.5])[None, :]
    starts, ends = _blocked_intervals(u, slack, nearest, nearest, max_relative)
    return _least_conflicts(starts, ends, 1.0 / step, max_relative)


@dataclasses.dataclass
class AddRounding:
    """A rounding the file does in an ADD's requantization, of ``s_a c_a + s_b c_b``.

    ``kind`` ``"staircase"``: the uniform staircase on the ReLU ``layer`` after the ``Add``
    (``thresholds`` its ``b_i``; the snap scales its ``beta``); ``"range"``: the ``Add``
    ``layer``'s own int8 output range (the snap divides its ``[lo, hi]`` by the factor).
    ``beta``: what turns a sum into output codes (the staircase's ``beta``, or one over the
    int8 step). ``inputs``: one ``(scale, codes)`` per input, as described; ``sources``: per input, the
    layer whose quantizer fixes it and ``"range"`` or ``"staircase"`` (to read it again from
    the model once earlier snaps have moved it)."""

    layer: str
    kind: str
    beta: float
    thresholds: np.ndarray
    inputs: list
    sources: list


def add_roundings(network):
    """The :class:`AddRounding` of every addition of two int8 tensors the model fixes whose
    sum the file rounds in the ADD itself, in network order (an addition's output range
    is the scale of the next one's input): a uniform staircase with levels ``0 .. n`` on a
    ReLU whose only input is an ``Add`` without a quantizer of its own, read by nothing else
    (:mod:`tf_qnets.export.rewrites.add_staircase`), or an ``Add`` with a scalar int8 output
    range (a ResNetV2 block output)."""
    producer, consumers, _ = graph_of(network)
    for node in network.nodes:
        layer = node.layer
        quantizer = layer.output_quantizer
        source = node
        if layer.class_name == "Add" and _is_scalar_range(quantizer):
            kind, thresholds = "range", None
            beta = 255.0 / (float(quantizer.hi) - float(quantizer.lo))
        elif is_add_staircase(layer) and len(node.flat_input_ids) == 1:
            source = producer.get(node.flat_input_ids[0])
            if (source is None or source.layer.class_name != "Add"
                    or source.layer.output_quantizer is not None
                    or consumers.get(source.flat_output_ids[0], 0) != 1):
                continue
            kind, thresholds = "staircase", np.asarray(quantizer.thresholds, np.float64)
            beta = float(quantizer.beta)
        else:
            continue
        found = [_int8_values(producer, tensor_id) for tensor_id in source.flat_input_ids]
        if len(found) == 2 and all(entry is not None for entry in found):
            yield AddRounding(layer.name, kind, beta, thresholds, [entry[:2] for entry in found],
                              [entry[2:] for entry in found])


def _is_scalar_range(quantizer):
    return isinstance(quantizer, Int8Range) and np.ndim(quantizer.lo) == 0


def is_add_staircase(layer):
    """True for a described layer whose output staircase an ADD before it can compute
    (:mod:`tf_qnets.export.rewrites.add_staircase` matches with this): a uniform staircase
    with levels ``0 .. n`` on a ReLU, capped only where the cap changes no level."""
    quantizer = layer.output_quantizer
    if not isinstance(quantizer, Staircase):
        return False
    is_relu, cap = relu_cap(layer)
    thresholds = np.asarray(quantizer.thresholds, np.float64)
    return (is_relu and has_saturating_lowering(quantizer.levels)
            and is_uniform_staircase(thresholds, quantizer.levels)
            and (cap is None or np.max(thresholds) / quantizer.beta < cap * (1 - 1e-6)))


def range_values(lo, hi):
    """``(scale, codes)`` of an int8 range ``[lo, hi]`` as TensorFlow's fake-quantization
    nudges it: codes ``0 .. 255`` less the rounded zero point (None for an empty range)."""
    lo, hi = float(lo), float(hi)
    scale = (hi - lo) / 255.0
    if not scale > 0:
        return None
    zero_point = float(np.clip(np.round(-lo / scale), 0.0, 255.0))
    return scale, np.arange(256.0) - zero_point


def staircase_values(alpha, top):
    """``(scale, codes)`` of a saturating staircase: levels ``0 .. top`` at scale ``alpha``."""
    return float(alpha), np.arange(int(top) + 1.0)


def _int8_values(producer, tensor_id):
    """``(scale, codes, layer, kind)`` of the int8 tensor ``tensor_id`` as the model fixes it
    (through layers that keep int8 values): a scalar int8 range or a saturating uniform
    staircase, and the layer whose quantizer it is; None for anything else."""
    while True:
        node = producer.get(tensor_id)
        if node is None:
            return None
        layer = node.layer
        quantizer = layer.output_quantizer
        if quantizer is None and (layer.class_name in INT8_KEEPING_LAYERS
                                  or is_identity_normalization(layer)):
            tensor_id = node.flat_input_ids[0]
            continue
        if _is_scalar_range(quantizer):
            values = range_values(quantizer.lo, quantizer.hi)
            return None if values is None else (*values, layer.name, "range")
        if (isinstance(quantizer, Staircase) and has_saturating_lowering(quantizer.levels)
                and is_uniform_staircase(quantizer.thresholds, quantizer.levels)):
            return (*staircase_values(quantizer.alpha, quantizer.levels.levels[-1]), layer.name,
                    "staircase")
        return None

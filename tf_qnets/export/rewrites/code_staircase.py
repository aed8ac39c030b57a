"""Rewrite: a staircase on a smooth activation, decided exactly on its int8 input codes.

Matches a staircase on an elementwise activation that is not a ReLU (swish, sigmoid, tanh,
GELU, ELU, leaky ReLU, ...: EfficientNet's ``Activation("swish")``) whose only input is an
int8 tensor of fixed range: the output of a layer with an 8-bit output quantizer
(``quantize_model`` gives the BatchNormalization or linear kernel layer before such an
activation one, so the Keras model rounds the pre-activation as the file does).

Emits a sum of saturating steps, one per change of the table below. The input takes one of
256 values ``v_k = lo + k d`` (``k`` its code, ``d`` the int8 step), and the Keras output
``alpha * Q(f(v_k))`` (``f`` the activation, ``Q`` the hard staircase) is a table
``alpha * L[k]`` of 256 levels. The table is computed at export time
with the Keras model's own float32 arithmetic, so it is the Keras output on every code,
non-monotonic ``f`` included (swish dips below zero). Writing it as unit steps,
``L[k] = L[0] + sum_j +-[k >= k_j]`` (a jump of ``D`` levels is ``|D|`` steps at one code),
the rewrite emits, from TFLite int8 builtins only (``R = d / (1 + 1/256)``)::

    up:   h_j = sat_[0, R](x - (v_(k_j) - R))         # R [k >= k_j]          (SUB)
    down: h_j = sat_[0, R]((v_(k_j - 1) + R) - x)     # R [k < k_j]           (SUB)
    c   = h_1 + h_2 + ...                            # steps passed, times R  (ADD)
    y   = c * (alpha / R) + alpha (L[0] - #down)     # scale alpha / m   (MUL, ADD if needed)

At code ``k_j`` an up-step's input is exactly ``R`` (the top of its window) and one code below
it ``R - d``, about one of the step's codes below 0, so the requantization gives exactly ``0``
or ``R`` whatever its rounding; the count ``c`` holds ``j R`` on a grid of step ``R / q``
(``q = 255 // #steps``), so every sum is exact, and the MUL rounds ``j alpha`` once onto the
output grid. Exact in every kernel set; it costs one SUB and one ADD per level the table
passes through (a 4-bit staircase on swish about 17 of each), one MUL and at most one ADD.
Without a fixed int8 input (an activation the model keeps in float before it), or with more
than :data:`MAX_TABLE_STEPS` steps (8-bit activations), the layer is called as it is
(:mod:`.layer_call`: its codes are then rounded twice and can differ from Keras').

Example (what a plan holds after this rewrite planned)::

    plan.claimed_by("quant_stem_activation", "code staircase")   # True for EfficientNet
"""

import numpy as np

from tf_qnets.core.lowering import is_table_staircase, output_range
from tf_qnets.export.activations import code_multiplier, fake_quant
from tf_qnets.export.emit import staircase_scope
from tf_qnets.export.rewrites.layer_call import LayerCall
from tf_qnets.keras2.backend import tf
from tf_qnets.tf.staircase import hard_staircase

__all__ = ["CodeStaircase", "MAX_TABLE_STEPS", "code_table", "table_jumps"]

# The most unit steps a table is emitted with (two int8 passes each): a 4-bit staircase on swish
# has about 10, an 8-bit one up to 255; beyond this the layer is called as it is (its codes
# rounded twice, listed as "rounded" in the export report).
MAX_TABLE_STEPS = 64


def code_table(layer, grid, alpha, beta, thresholds, levels, tf_layer):
    """``L[k]``: the staircase level Keras computes for the input value ``grid[k]`` (``tf_layer``:
    the activation layer in TensorFlow, float32 as in the Keras model)."""
    values = tf.constant(np.asarray(grid, np.float32).reshape(1, -1))
    activated = tf.cast(tf_layer(values, training=False), tf.float32)
    out = hard_staircase(activated, np.float32(alpha), np.float32(beta),
                         np.asarray(thresholds, np.float32), levels)
    table = np.round(np.asarray(out, np.float64).reshape(-1) / np.float32(alpha))
    return table.astype(np.int64)


def table_jumps(table):
    """``[(k_j, D_j)]``: the codes where the table changes and by how much (increasing ``k``)."""
    table = np.asarray(table, np.int64)
    where = np.nonzero(np.diff(table))[0] + 1
    return [(int(k), int(table[k] - table[k - 1])) for k in where]


def int8_grid(lo, hi):
    """The 256 values of TensorFlow's 8-bit fake-quantization grid for ``[lo, hi]`` (nudged so
    that 0 is on it), in code order."""
    probe = np.linspace(lo, hi, 256 * 16, dtype=np.float32)
    values = np.unique(np.asarray(tf.quantization.fake_quant_with_min_max_args(
        probe, float(lo), float(hi), num_bits=8)))
    return values.astype(np.float64)


class CodeStaircase:
    name = "code staircase"
    order = 85

    def plan(self, plan):
        for node in plan.nodes:
            source = plan.source_node(node)
            if len(node.flat_input_ids) == 1 and is_table_staircase(
                    node.layer, None if source is None else source.layer):
                plan.claim(node, self)

    def emit(self, node, values, context):
        if not context.tracing:
            return LayerCall().emit(node, values, context)
        layer = node.layer
        x = values[node.flat_input_ids[0]]
        found = context.int8_range(x)
        if found is None:
            return LayerCall().emit(node, values, context)
        alpha, beta, thresholds, levels = context.plan.outputs[layer.name][1]
        with tf.init_scope():   # eager, outside the traced graph: the table is a constant
            grid = int8_grid(*found)
            table = code_table(layer, grid, alpha, beta, thresholds, levels,
                               context.plan.tf_layer(layer))
        jumps = table_jumps(table)
        steps = sum(abs(delta) for _, delta in jumps)
        if len(grid) < 2 or not 0 < steps <= MAX_TABLE_STEPS:
            # one level for every code, or a staircase of more levels than the emitted passes
            # are worth (8-bit activations): called as it is, reported as rounded
            return LayerCall().emit(node, values, context)
        with tf.name_scope(staircase_scope(layer.name)):
            y = _steps(x, grid, table[0], jumps, float(alpha), levels)
        context.code_tables.add(layer.name)
        return context.staircase_output(y, code_multiplier(levels))


# A step's window ``[0, R]``, ``R = d / (1 + 1/256)`` for an input of int8 step ``d``: at code
# ``k_j`` the step's input is exactly ``R`` (its top), one code below it ``R - d``, about one of
# the step's codes below 0 (rounded to 0); the input-to-output scale ratio, ``255 d / R =
# 255.996``, stays under the 256 that XNNPACK's int8 ADD and SUB accept.
_STEP_SHRINK = 1.0 + 1.0 / 256.0


def _steps(x, grid, first_level, jumps, alpha, levels):
    """The step sum of the module docstring on the int8 tensor ``x`` (values ``grid``). A jump
    of ``D`` levels is ``|D|`` unit steps at the same code."""
    unit_jumps = [(k, 1 if delta > 0 else -1) for k, delta in jumps for _ in range(abs(delta))]
    start = first_level - sum(1 for _, delta in unit_jumps if delta < 0)
    d = float(grid[1] - grid[0])
    r = d / _STEP_SHRINK
    per_step = 255 // len(unit_jumps)          # codes of the count per step (exact sums)
    count_hi = r * 255.0 / per_step
    count = None
    for k, delta in unit_jumps:
        if delta > 0:    # r [code >= k]
            h = fake_quant(x - np.float32(grid[k] - r), 0.0, r)
        else:            # r [code < k] (its -1 is in ``start``)
            h = fake_quant(np.float32(grid[k - 1] + r) - x, 0.0, r)
        count = h if count is None else fake_quant(count + h, 0.0, count_hi)
    out_lo, out_hi = output_range(alpha, levels)
    if not start:       # the count of levels is the level
        return fake_quant(count * np.float32(alpha / r), out_lo, out_hi)
    # j alpha on a grid of its own (it may pass the top level before the offset comes off)
    y = fake_quant(count * np.float32(alpha / r), 0.0, alpha * 255.0 / per_step)
    return fake_quant(y + np.float32(alpha * start), out_lo, out_hi)

"""Rewrite: a staircase decided on its kernel layer's int32 accumulator, one copy per threshold.

Matches a staircase computed from a kernel layer's accumulator
(:func:`.staircase_source.staircase_source`) whose thresholds are not uniform (k-means or
trained), or any such staircase with ``exact_uniform=True``; it takes over the kernel layer's
node and the staircase's. Emits the kernel layer once per threshold ``t`` with ``t`` in
its bias as an exact integer number of accumulator units, so each copy's sign is the Keras
decision ``z > t`` (:func:`tf_qnets.export.activations.lower_staircase_direct`). The aligned
rewrite falls back to these copies for a first layer it cannot align (:func:`emit_copies`).
"""

import numpy as np

from tf_qnets.keras2.backend import tf
from tf_qnets.export.activations import code_multiplier
from tf_qnets.export.activations import decision_step as default_decision_step
from tf_qnets.export.activations import lower_staircase_direct
from tf_qnets.export.emit import SCALE_KEEPING_OPS, staircase_scope
from tf_qnets.export.rewrites.kernels import Kernels, emit_activation, emit_kernel, pinned_kernel
from tf_qnets.export.rewrites.kernels import weight_steps
from tf_qnets.export.rewrites.layer_call import LayerCall
from tf_qnets.export.rewrites.staircase_source import Deferred, staircases_from_accumulators

__all__ = ["StaircaseCopies", "emit_copies"]


class StaircaseCopies:
    name = "staircase copies"
    order = 50

    def plan(self, plan):
        copies = plan.note(self.name)   # staircase name -> (kernel layer name, relu before it)
        for staircase, kernel, relu in staircases_from_accumulators(plan, aligned=False):
            copies[staircase.layer.name] = (kernel.layer.name, relu)
            plan.claim(staircase, self)
            plan.claim(kernel, self)

    def emit(self, node, values, context):
        layer = node.layer
        x = values[node.flat_input_ids[0]]
        copies = context.plan.note(self.name)
        if not context.quantize:   # the float network: the layers as they are
            if layer.name in context.plan.note(Kernels.name):
                return emit_activation(context, layer, emit_kernel(context, layer, x))
            return LayerCall().emit(node, values, context)
        if layer.name in copies and copies[layer.name][0] == layer.name:  # the kernel's own
            return emit_copies(context, layer, layer, x, copies[layer.name][1])
        if isinstance(x, Deferred):                                       # a ReLU after it
            return emit_copies(context, layer, x.layer, x.inputs, copies[layer.name][1])
        return Deferred(layer, x)                                         # the kernel layer


def accumulator_units(context, kernel_layer, inputs):
    """Per-channel value ``S_c`` of one int32 accumulator unit (input scale times weight
    scale) as the converter will set it, or ``None`` when the input's scale is unknown
    (eager calibration, or an input not produced by a fake-quantization)."""
    input_scale = context.input_scale(inputs, SCALE_KEEPING_OPS)
    if input_scale is None:
        return None
    return input_scale * weight_steps(pinned_kernel(context, kernel_layer.name))


def emit_copies(context, layer, kernel_layer, inputs, relu):
    """The staircase of ``layer`` from per-threshold copies of ``kernel_layer``.

    When the accumulator units ``S_c`` are known, each copy's bias is an exact integer
    number of units: with ``v_c = S_c acc + b_c`` (``acc`` the integer accumulator),
    ``v_c > t`` holds exactly when ``acc >= n_c = floor((t - b_c) / S_c) + 1``, so the
    copy computes ``S_c (acc + 1 - n_c)`` on a grid of step ``d = min_c S_c``: one or
    more steps exactly when the Keras decision is true. Otherwise the float bias
    ``b_c - t + d/2`` is used (exact up to the int32 bias rounding).
    """
    alpha, beta, thresholds, levels = context.plan.outputs[layer.name][1]
    units = accumulator_units(context, kernel_layer, inputs)
    bias = np.asarray(pinned_kernel(context, kernel_layer.name).bias, np.float64)
    if units is not None and np.all(units > 0):
        step = float(np.min(units))

        def copy(t, gain):
            first = np.floor((t - bias) / units) + 1.0
            return emit_kernel(context, kernel_layer, inputs, bias - units * (1.0 - first), gain)
    else:
        step = default_decision_step(np.asarray(thresholds, np.float64) / beta)

        def copy(t, gain):
            return emit_kernel(context, kernel_layer, inputs, t - step / 2.0, gain)
    with tf.name_scope(staircase_scope(layer.name)):
        y = lower_staircase_direct(copy, relu, alpha, beta, thresholds, levels, step=step,
                                   name=layer.name)
    context.copied[layer.name] = kernel_layer.name
    return context.staircase_output(y, code_multiplier(levels))

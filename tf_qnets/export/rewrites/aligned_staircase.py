"""Rewrite: a uniform staircase computed by its kernel layer's own int8 requantization.

Matches a staircase with uniform thresholds computed from a kernel layer's accumulator
(:func:`.staircase_source.staircase_source`; not with ``exact_uniform=True``); it takes over
the kernel layer's node and the staircase's. Emits the kernel layer alone: when the graph
is traced, its per-channel integer bias and weight scale are chosen so that its single
requantization gives every Keras code (:func:`tf_qnets.core.alignment.align_channels`),
its int8 codes stored as ``k * level`` where that aligns more channels. For levels ``0 .. n`` the layer is also scaled
by ``alpha * beta`` and its output given the scale ``alpha`` and zero point ``127 - n``: the
requantization is then ``round(beta z)``, the fused ReLU clips at level 0 and int8
saturation at level ``n``, and no op follows the kernel layer. A first layer reading the
model input that no alignment fits is emitted as per-threshold copies instead (up to
:data:`MAX_FIRST_LAYER_COPIES` thresholds).
"""

import numpy as np

from tf_qnets.keras2.backend import tf
from tf_qnets.export.activations import (
    fake_quant,
    has_saturating_lowering,
    saturating_range,
)
from tf_qnets.core.alignment import align_channels, channel_lattice
from tf_qnets.core.weight_codes import stored_codes
from tf_qnets.export.emit import staircase_scope
from tf_qnets.export.layers import layer_class
from tf_qnets.export.rewrites.kernels import (
    calibrates_output,
    emit_activation,
    emit_kernel,
    finer_codes,
    pinned_kernel,
    weight_steps,
)
from tf_qnets.export.rewrites.layer_call import LayerCall
from tf_qnets.export.rewrites.staircase_copies import emit_copies
from tf_qnets.export.rewrites.staircase_source import Deferred, staircases_from_accumulators

__all__ = ["AlignedStaircase", "MAX_FIRST_LAYER_COPIES", "aligned_scaling", "pooled_alignment"]

# A first layer (reading the model input) whose staircase no alignment fits is emitted once per
# threshold up to this many thresholds (3-bit activations): 7 copies of a small layer. At 4 bits
# (15 copies) the copies cost more file and time than the rare flipped code: aligned where
# possible instead.
MAX_FIRST_LAYER_COPIES = 7
# Kernel layers whose last kernel axis is the output channel (aligned per channel).
ALIGNABLE = ("Conv1D", "Conv2D", "Dense", "DepthwiseConv2D")


class AlignedStaircase:
    name = "aligned staircase"
    order = 60

    def plan(self, plan):
        # kernel layer name -> (staircase name, relu before it), and staircase name -> relu
        by_kernel = plan.note(self.name).setdefault("by kernel", {})
        relu_of = plan.note(self.name).setdefault("relu of staircase", {})
        for staircase, kernel, relu in staircases_from_accumulators(plan, aligned=True):
            by_kernel[kernel.layer.name] = (staircase.layer.name, relu)
            relu_of[staircase.layer.name] = relu
            plan.claim(kernel, self)
            plan.claim(staircase, self)

    def emit(self, node, values, context):
        layer = node.layer
        x = values[node.flat_input_ids[0]]
        note = context.plan.note(self.name)
        entry = note["by kernel"].get(layer.name)
        if entry is None:   # the staircase node (a ReLU after the kernel layer)
            if isinstance(x, Deferred):
                return emit_copies(context, layer, x.layer, x.inputs,
                                   note["relu of staircase"][layer.name])
            if layer.name in context.prescaled:
                return _prescaled_output(context, layer, x)
            return LayerCall().emit(node, values, context)
        staircase, relu = entry
        y = self._kernel_layer(context, layer, x, staircase, relu)
        if isinstance(y, Deferred):
            return emit_copies(context, layer, layer, y.inputs, relu) if staircase == layer.name else y
        y = emit_activation(context, layer, y)
        if staircase in context.prescaled:
            # the staircase is this layer's requantization: no range in between
            return _prescaled_output(context, layer, y) if staircase == layer.name else y
        return context.output(layer, y, calibrate=calibrates_output(context.plan, layer.name))

    def _kernel_layer(self, context, layer, inputs, staircase, relu):
        """The kernel layer, aligned for its staircase when the graph is traced (or a Deferred
        for per-threshold copies of a first layer no alignment fits)."""
        if not context.tracing or layer_class(layer) not in ALIGNABLE:
            return emit_kernel(context, layer, inputs)
        pinned = pinned_kernel(context, layer.name)
        if context.reads_model_input(inputs):
            # channels without a solution keep the plainly rounded bias: its unit (that of the
            # plain codes) for tf_qnets.core.bias_lattice
            context.record_bias_lattice(layer.name, inputs, pinned, weight_steps(pinned))
        plan = _alignment(context, inputs, pinned, staircase)
        if plan is None:
            return emit_kernel(context, layer, inputs)
        if not np.all(plan.exact) and pinned.levels is not None and pinned.num_bits == 8:
            # int8 storage already: storing k * level instead of level costs nothing
            finer = finer_codes(pinned)
            finer_plan = _alignment(context, inputs, finer, staircase)
            if finer_plan is not None and _score(finer_plan) > _score(plan):
                context.pinned_overrides[layer.name], plan = finer, finer_plan
        context.alignments[staircase] = plan
        thresholds = context.plan.outputs[staircase][1][2]
        if (not np.all(plan.exact) and context.reads_model_input(inputs)
                and len(thresholds) <= MAX_FIRST_LAYER_COPIES):
            # The model input is exact on its int8 grid (8-bit images): keep it exact with
            # per-threshold copies (a first layer is small). Any other int8 tensor here was
            # rounded by a calibrated range already, so copies could not make it exact.
            return Deferred(layer, inputs)
        gain, bias = aligned_scaling(context, layer, staircase, plan)
        return emit_kernel(context, layer, inputs, gain=gain, bias_override=bias)


def aligned_scaling(context, layer, staircase, plan):
    """``(gain, bias)`` per channel that make ``layer``'s requantization its staircase's, given
    the alignment ``plan``; for levels ``0 .. n`` also scaled by ``alpha * beta`` (the
    staircase is then marked prescaled). Channels without a solution keep the plainly
    rounded bias (gain 1)."""
    alpha, beta, _, levels = context.plan.outputs[staircase][1]
    factor = 1.0
    if has_saturating_lowering(levels):
        factor = float(alpha) * float(beta)
        context.prescaled[staircase] = layer.name
    return plan.gain * factor, plan.bias * factor


def pooled_alignment(context, layer, inputs, area):
    """The ``(gain, bias)`` aligning a kernel layer emitted over a global average pooling
    (:mod:`.pooled_dense`: weight steps ``s_w / area`` over the unpooled ``inputs``) to its
    staircase, or None when it has none here or the scales are unknown."""
    entry = context.plan.note(AlignedStaircase.name).get("by kernel", {}).get(layer.name)
    if entry is None or not context.tracing:
        return None
    staircase = entry[0]
    plan = _alignment(context, inputs, pinned_kernel(context, layer.name), staircase,
                      divisor=area)
    if plan is None:
        return None
    context.alignments[staircase] = plan
    return aligned_scaling(context, layer, staircase, plan)


def _prescaled_output(context, layer, x):
    """The staircase of a kernel layer scaled by ``alpha * beta``: its ReLU and its saturating
    int8 range (:func:`tf_qnets.export.activations.saturating_range`)."""
    alpha, _, _, levels = context.plan.outputs[layer.name][1]
    with tf.name_scope(staircase_scope(layer.name)):
        y = fake_quant(tf.nn.relu(x), *saturating_range(alpha, levels))
    return context.staircase_output(y, 1, alpha, levels)


def _alignment(context, inputs, pinned, staircase, divisor=1.0):
    """:func:`align_channels` for a layer stored as ``pinned`` (its accumulator unit divided by
    ``divisor``); None if scales are unknown."""
    input_scale = context.input_scale(inputs)
    if input_scale is None:
        return None
    step = weight_steps(pinned)
    lattice = channel_lattice(stored_codes(pinned), context.input_code_multiplier(inputs))
    _, beta, thresholds, levels = context.plan.outputs[staircase][1]
    return align_channels(input_scale * step / divisor, pinned.bias, lattice, beta, thresholds,
                          levels)


def _score(plan):
    """How good an alignment is: channels exact under every rounding, then under one."""
    return int(np.sum(plan.exact)), int(np.sum(plan.solved))

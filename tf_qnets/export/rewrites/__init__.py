"""The rewrites of the export graph, one module each: which layers it takes, what it emits.

Every rewrite is a class with a ``name``, an ``order``, a ``plan(plan)`` that claims the
nodes it lowers (:meth:`tf_qnets.export.plan.ExportPlan.claim`) and records its decisions in
``plan.note(name)``, and an ``emit(node, values, context)`` that returns the node's output
tensor (``values``: tensor id -> emitted tensor; ``context``: the
:class:`tf_qnets.export.emit.EmitContext`). They plan in increasing ``order``; a later rewrite
may take over a node an earlier one claimed (it is the more specific one). Adding a rewrite
is adding one module to this package: :func:`discover` finds its class. Today's rewrites:

* :mod:`.layer_call`: any layer, called as it is, then its output quantizer (or a calibrated range);
* :mod:`.pass_through`: layers that only move values (keep their input's range);
* :mod:`.affine`: an unfolded BatchNormalization, Rescaling or Normalization;
* :mod:`.batch_norm_fold`: a BatchNormalization folded into the kernel layer before it;
* :mod:`.kernels`: Conv1D/Conv2D/DepthwiseConv2D/Dense with pinned weight codes;
* :mod:`.staircase_copies`: a non-uniform staircase from per-threshold copies of its kernel layer;
* :mod:`.aligned_staircase`: a uniform staircase as its kernel layer's own requantization;
* :mod:`.pooled_dense`: a global average pooling folded into the Dense layer after it;
* :mod:`.add_staircase`: a ReLU staircase after an addition (residual ``Add``, ``x + 3``);
* :mod:`.constant_scale`: an int8 tensor times a positive constant keeps its codes;
* :mod:`.batch_norm_depthwise`: an unfolded BN before a ReLU staircase as a 1x1 depthwise conv;
* :mod:`.channel_affine`: a per-channel Normalization/Rescaling with an int8 output, likewise;
* :mod:`.concatenation`: a Concatenate keeps its fixed-range inputs on their own grids;
* :mod:`.average_pooling`: an average pooling with an int8 range as a depthwise conv;
* :mod:`.code_staircase`: a staircase on swish, sigmoid, ... as a table of its int8 input's codes.
"""

import importlib
import pkgutil

__all__ = ["REWRITES", "discover"]


def discover():
    """One instance of every rewrite class defined in this package (a class with ``name``,
    ``order``, ``plan`` and ``emit``), sorted by ``order``."""
    found = {}
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and value.__module__ == module.__name__
                    and all(hasattr(value, attr) for attr in ("name", "order", "plan", "emit"))):
                found[value.name] = value()
    return tuple(sorted(found.values(), key=lambda rewrite: rewrite.order))


REWRITES = discover()

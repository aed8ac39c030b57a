"""The int32 bias units an export really used, for its report (:mod:`tf_qnets.core.bias_lattice`).

While tracing, every kernel layer emitted as a plain kernel op whose input scale the model fixes
records ``(u_c, b_c)`` (:meth:`tf_qnets.export.emit.EmitContext.record_bias_lattice`);
:func:`traced_bias_lattices` turns those records into
:class:`tf_qnets.core.bias_lattice.BiasLattice` rows, so that ``export_tflite`` can list the
layers whose bias its file rounds (and ``tests/test_bias_lattice.py`` can check them against
the units :func:`tf_qnets.core.bias_lattice.bias_lattices` reads from the description alone).
"""

import numpy as np

from tf_qnets.core.bias_lattice import BiasLattice, bias_owner
from tf_qnets.export.rewrites.batch_norm_fold import BatchNormFold

__all__ = ["traced_bias_lattices"]


def traced_bias_lattices(plan, context):
    """:class:`BiasLattice` rows of one traced export (``context``: its EmitContext)."""
    folds = plan.note(BatchNormFold.name)
    rows = []
    for name, (unit, bias) in context.bias_lattices.items():
        layer = plan.node_by_name[name].layer
        rows.append(BiasLattice(name, np.asarray(unit, np.float64), np.asarray(bias, np.float64),
                                *bias_owner(layer, folds.get(name))))
    return rows

"""How many calibration batches the layer-by-layer walk may keep in memory.

Calibration walks the model once, node by node, and keeps each node's outputs for all
calibration batches until their last reader has run (``keras2/propagation.py``,
``keras3/propagation.py``). At any time that is at most about the three largest layer outputs
(a residual block holds its shortcut and two branch tensors)::

    live bytes per sample = 4 * (sum of the three largest per-sample output sizes)

and the walk takes the leading batches whose samples fit :data:`CALIBRATION_MEMORY_BYTES`
(at least one batch). Large inputs (224x224 MobileNets) then use fewer images than given,
which the statistics of a few hundred images do not need.

Example::

    >>> live_bytes_per_sample([(None, 32, 32, 16), (None, 16, 16, 32), (None, 10)])
    98344.0
    >>> [len(b) for b in leading_batches([np.zeros((32, 5))] * 4, 1000.0, budget=70_000)]
    [32, 32]
    >>> two_inputs = [[np.zeros((32, 5)), np.zeros((32, 2))]] * 4     # a list per batch
    >>> [batch_length(b) for b in leading_batches(two_inputs, 1000.0, budget=70_000)]
    [32, 32]
"""

import numpy as np

__all__ = ["CALIBRATION_MEMORY_BYTES", "batch_length", "leading_batches", "live_bytes_per_sample"]

CALIBRATION_MEMORY_BYTES = 2 * 2**30   # live activations kept by the layer-by-layer walk


def live_bytes_per_sample(output_shapes):
    """Float32 bytes per sample of the three largest outputs among ``output_shapes``
    (shapes with the batch axis first; unknown dimensions count as 1)."""
    sizes = [4.0 * np.prod([d for d in shape[1:] if d is not None], dtype=np.float64)
             for shape in output_shapes if shape is not None]
    return float(sum(sorted(sizes)[-3:])) if sizes else 0.0


def batch_length(batch):
    """Samples in one calibration batch: an array, or a list or tuple of arrays (one per input
    of a model with several inputs, all of the same length)."""
    return len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)


def leading_batches(batches, per_sample, budget=CALIBRATION_MEMORY_BYTES, verbose=0):
    """The leading ``batches`` whose samples, at ``per_sample`` bytes each, fit ``budget``
    (at least one batch); with ``verbose`` a line says when some are left out."""
    if per_sample <= 0:
        return batches
    capacity = max(1, int(budget // per_sample))
    kept, samples = [], 0
    for batch in batches:
        if kept and samples + batch_length(batch) > capacity:
            break
        kept.append(batch)
        samples += batch_length(batch)
    if verbose and len(kept) < len(batches):
        total = sum(batch_length(batch) for batch in batches)
        print(f"[tf_qnets] calibrating on the first {samples} of {total} samples "
              f"(activations of {per_sample / 2**20:.1f} MiB per sample; memory budget "
              f"{budget / 2**30:.0f} GiB)")
    return kept

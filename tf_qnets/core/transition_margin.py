"""Staircase transitions that float32 cannot decide differently: kept off the accumulator lattice.

A kernel layer whose staircase the integer file computes inside its own requantization
(:mod:`tf_qnets.core.alignment`) passes level ``i`` in Keras where ``beta z > b_i``, that is
where its integer accumulator ``A`` exceeds the transition

    p_i = (b_i / beta - b_c) / u_c        (accumulator units, ``b_c`` the folded bias),

and ``A`` only takes values on the lattice ``L_c Z``. The file decides every ``A`` exactly;
the Keras hard model computes ``z`` in float32, off by a few 1e-7 of the magnitudes it adds
(``|A|`` and ``|b_c| / u_c`` in units; in tests/test_transition_margin.py the accumulators
read back from Keras' pre-activation sit up to 1e-5 units off the lattice). Where a
transition sits that close to a lattice point the accumulator reaches, Keras decides that
point either way and the file one way (a transition placed exactly on a reached accumulator
in four channels of that test: 313 of 262,144 codes apart). Training puts transitions
anywhere: a MobileNet fine-tuned at W3A3 had 61 transitions, in 12 of its aligned layers,
within the margins below.

Moving the folded bias by ``-delta_c u_c`` moves every transition of the channel by
``+delta_c``; :func:`transition_shifts` finds the smallest ``|delta_c|`` that leaves each
``p_i + delta_c`` at least ``margin_i = r (|p_i| + M_c)`` units from ``L_c Z``, with ``M_c =
|b_c| / u_c + |v_c| / u_c`` (``v_c`` the variable that holds the bias, a BN's ``beta``: Keras
adds it, and its float32 rounding is what a moved bias keeps), trying
``r`` in :data:`RELATIVE_MARGINS` in turn, and keeps each transition between the lattice
points it was between: the file's codes stay as they were, and Keras' float32 now decides as
the file does. The model changes by a few ten-thousandths of an accumulator unit in the
channels that move; the file stays exact for any bias.

Example::

    >>> import numpy as np
    >>> shifts, solved = transition_shifts([[527.0002, 410.4]], [31.0], [600.0])
    >>> round(float(shifts[0]), 4), bool(solved[0])   # 527.0002 -> 527.0047: 1.05 x 4e-6 (527 + 600) clear
    (0.0045, True)
"""

import numpy as np

__all__ = ["RELATIVE_MARGINS", "transition_margins", "transition_shifts"]

# Margins tried per channel, relative to the magnitudes Keras adds (|A| ~ |p_i|, |b_c| / u_c,
# |v_c| / u_c): 4e-6 is about 60 float32 roundings; the smaller ones serve channels with
# many transitions on a fine lattice.
RELATIVE_MARGINS = (4e-6, 1e-6, 2.5e-7)


def transition_margins(transitions, magnitudes, relative):
    """``[C, n]`` margins in units: ``relative * (|p_i| + M_c)``."""
    p = np.asarray(transitions, np.float64)
    return relative * (np.abs(p) + np.abs(np.asarray(magnitudes, np.float64)).reshape(-1, 1))


def transition_shifts(transitions, lattice, magnitudes):
    """Per channel, the smallest ``delta`` (units) with every ``p_i + delta`` clear of the
    lattice (module docstring) and in the same lattice gap as ``p_i``, so that the file's
    codes do not change; where the gaps leave no such ``delta``, the smallest that clears
    them across a lattice point; 0 where every transition is clear by 90% of its margin
    already (so that float32 roundings of a moved bias never call for another move). Also
    whether one was found (``delta`` 0 where not).

    Args:
      transitions: ``[C, n]`` transitions ``p_i`` in accumulator units.
      lattice: ``[C]`` lattice steps ``L_c`` in units (huge for a channel whose codes are 0).
      magnitudes: ``[C]`` ``M_c`` in units (module docstring): what Keras adds besides ``A``.
    """
    p = np.asarray(transitions, np.float64)
    p = p.reshape(p.shape[0], -1)
    lattice = np.asarray(lattice, np.float64).ravel()
    channels = p.shape[0]
    shifts = np.zeros(channels)
    solved = np.zeros(channels, bool)
    pending = np.isfinite(lattice) & np.all(np.isfinite(p), axis=1)
    rows = np.arange(channels)
    # A channel stays where every transition is clear by 90% of its margin; one that moves
    # goes 5% past its margin where it can: the float32 bias variable's own rounding (about
    # 6e-8 of |v_c / u_c|) cannot bring it under 90%, so a second call moves nothing.
    stay_factor, slack = 0.9, 1.05
    gap = np.floor(p / lattice[:, None])                # the file's lattice gap of each p_i
    for relative in RELATIVE_MARGINS:
        if not pending.any():
            break
        margin = transition_margins(p, magnitudes, relative)                  # [C, n]
        # Every p_i + delta inside its own gap, margin from both ends: an interval of deltas.
        bounds = []
        for factor in (stay_factor, 1.0, slack):
            bounds.append((np.max(lattice[:, None] * gap + factor * margin - p, axis=1),
                           np.min(lattice[:, None] * (gap + 1.0) - factor * margin - p, axis=1)))
        (low_stay, high_stay), (low, high), (low_slack, high_slack) = bounds
        stay = pending & (low_stay <= 0.0) & (high_stay >= 0.0)   # clear already
        roomy = pending & ~stay & (low_slack <= high_slack)       # moved to slack x margin
        tight = pending & ~stay & ~roomy & (low <= high)          # only the margin itself fits
        shifts = np.where(roomy, np.clip(0.0, low_slack, high_slack), shifts)
        shifts = np.where(tight, np.clip(0.0, low, high), shifts)
        found = stay | roomy | tight
        solved |= found
        pending &= ~found
        if not pending.any():
            break
        # No such delta (transitions pressed against both ends of their gaps): the smallest
        # one that clears them all across a lattice point (the file's codes change there).
        nearest = lattice[:, None] * np.round(p / lattice[:, None])
        ends = []
        for k in (-1.0, 0.0, 1.0):
            point = nearest + k * lattice[:, None]
            ends += [point - slack * margin - p, point + slack * margin - p]
        candidates = np.concatenate(ends, axis=1)                               # [C, 6n]
        moved = p[:, None, :] + candidates[:, :, None]                          # [C, K, n]
        distance = np.abs(moved - lattice[:, None, None] * np.round(moved / lattice[:, None, None]))
        clear = np.all(distance >= margin[:, None, :], axis=2)                  # [C, K]
        size = np.where(clear, np.abs(candidates), np.inf)
        best = np.argmin(size, axis=1)
        found = pending & np.isfinite(size[rows, best])
        shifts = np.where(found, candidates[rows, best], shifts)
        solved |= found
        pending &= ~found
    return shifts, solved

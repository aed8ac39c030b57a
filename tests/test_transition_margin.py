"""Aligned staircases keep their transitions off the accumulator lattice (tf_qnets.core.transition_margin).

The end-to-end case: the MobileNetV2-like block of tests/test_finer_input.py, whose ``expand``
convolution computes its 3-bit staircase in its own requantization (aligned). The folded
biases of four channels are set so that a transition sits exactly on an accumulator the data
reaches: the file (exact) decides those pixels one way, Keras' float32 value either way.
``snap_biases`` moves those biases by a few ten-thousandths of a unit and every value agrees
again.
"""

import numpy as np

import tf_qnets
from conftest import cut_export_offset
from test_finer_input import _model
from tf_qnets.core.bias_lattice import aligned_transitions
from tf_qnets.core.transition_margin import RELATIVE_MARGINS, transition_margins, transition_shifts
from tf_qnets.keras2.backend import keras
from tf_qnets.keras2.describe_network import describe_network


def _distance(p, lattice):
    return np.abs(p - lattice[:, None] * np.round(p / lattice[:, None]))


def test_every_transition_ends_at_least_its_margin_from_the_lattice_with_the_smallest_shift():
    rng = np.random.default_rng(0)
    lattice = rng.integers(20, 60, 200).astype(np.float64)
    bias_units = rng.uniform(-3000, 3000, 200)
    # 7 evenly spaced transitions, the fourth within 1e-3 units of a lattice point
    start = lattice * rng.integers(-40, 40, 200) + rng.choice([2.0, 5.0, 7.5], 200)
    p = start[:, None] + rng.uniform(20, 200, 200)[:, None] * np.arange(7)[None, :]
    p[:, 3] = lattice * np.round(p[:, 3] / lattice) + rng.uniform(-1e-3, 1e-3, 200)
    shifts, solved = transition_shifts(p, lattice, bias_units)
    assert solved.all()
    margin = transition_margins(p, bias_units, RELATIVE_MARGINS[0])
    moved = p + shifts[:, None]
    # clear by the margin where moved; by 90% of it where left as it was
    assert np.all(_distance(moved, lattice) >= np.where(shifts[:, None] != 0, 1.0, 0.9) * margin)
    assert np.any(shifts != 0.0) and np.any(shifts == 0.0)
    gap = np.floor(p / lattice[:, None])
    kept = np.all(np.floor(moved / lattice[:, None]) == gap, axis=1)
    assert kept.mean() > 0.9
    for c in np.flatnonzero(shifts):
        # no smaller shift would do (up to the 5% kept inside the margins), and one that
        # crosses a lattice point (the file's codes change) only where none stays inside
        grid = np.linspace(-lattice[c] / 2, lattice[c] / 2, 20001)
        trial = p[c][None, :] + grid[:, None]
        clear = np.all(_distance(trial, np.full(len(grid), lattice[c])) >= margin[c][None, :],
                       axis=1)
        inside = clear & np.all(np.floor(trial / lattice[c]) == gap[c][None, :], axis=1)
        assert kept[c] == inside.any()
        best = np.min(np.abs(grid[inside if kept[c] else clear]))
        assert abs(shifts[c]) <= best + 0.06 * margin[c].max() + lattice[c] / 20000


def test_transitions_pressed_against_both_ends_of_their_gaps_move_across_a_lattice_point():
    lattice = np.array([10.0])
    # one transition just above a lattice point, one just below the next: no shift keeps
    # both inside their gaps by the margin, so the smallest clear one crosses
    p = np.array([[1e3 + 1e-4, 1e3 + 20.0 - 1e-4]])
    shifts, solved = transition_shifts(p, lattice, [0.0])
    margin = transition_margins(p, [0.0], RELATIVE_MARGINS[0])
    assert solved[0] and np.all(_distance(p + shifts[:, None], lattice) >= margin)
    assert abs(shifts[0]) < 2 * margin.max()


def test_clear_transitions_stay_and_a_channel_without_room_is_left_as_it_is():
    lattice = np.array([31.0, 1.0])
    # channel 0: clear already; channel 1: transitions every 0.1 of a unit-step lattice,
    # margins of about 2.5 units at the smallest relative margin: no room
    p = np.array([[10.5 * 31, 20.5 * 31, 30.5 * 31],
                  [1e7, 1e7 + 0.1, 1e7 + 0.2]])
    shifts, solved = transition_shifts(p, lattice, [0.0, 0.0])
    assert list(solved) == [True, False] and list(shifts) == [0.0, 0.0]


def _aligned_expand(qat):
    return {row.layer: row for row in aligned_transitions(describe_network(qat))}["quant_expand"]


def test_snap_biases_moves_transitions_off_reached_accumulators_and_the_file_agrees(
        tmp_path, monkeypatch):
    monkeypatch.setattr("tf_qnets.keras2.api.snap_if_describable", lambda *args: None)
    data = np.random.default_rng(0).uniform(0, 1, (64, 16, 16, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(_model(), w_bits=3, a_bits=3, calibration_data=data,
                                  first_last="int8", verbose=0)
    row = _aligned_expand(qat)
    assert (row.owner, row.attribute) == ("expand_bn", "beta")
    # the accumulators the data reaches: Keras' pre-activation in units, on the lattice up
    # to float32's error
    bn = qat.get_layer("expand_bn")
    z = np.asarray(keras.Model(qat.inputs, bn.get_output_at(-1))(data), np.float64)
    accumulators = (z - row.bias) / row.units
    on_lattice = row.lattice * np.round(accumulators / row.lattice)
    assert 0 < np.max(np.abs(accumulators - on_lattice)) < 1e-4
    # put the first transition of four channels exactly on the accumulator each reaches most
    beta = bn.beta.numpy().astype(np.float64)
    for channel in range(4):
        values, counts = np.unique(on_lattice[..., channel], return_counts=True)
        counts[values == 0] = 0
        beta[channel] += (row.transitions[channel, 0] - values[np.argmax(counts)]) * row.units[channel]
    bn.beta.assign(beta.astype(np.float32))
    before = cut_export_offset(qat, "quant_relu", data, data, str(tmp_path / "before.tflite"))
    # Keras' float32 decides those accumulators either way, the file (exact) one way:
    # measured 313 of 262,144 codes apart
    assert before[1] > 1e-4

    report = tf_qnets.snap_biases(qat)
    assert report.transitions == ["quant_expand"] and "transition_margin" in str(report)
    row = _aligned_expand(qat)
    margin = transition_margins(row.transitions, row.bias / row.units, RELATIVE_MARGINS[0])
    assert np.all(_distance(row.transitions, row.lattice) >= 0.9 * margin)
    assert np.max(np.abs(bn.beta.numpy() - beta) / row.units) < 1e-2   # a few 1e-4 units
    after = cut_export_offset(qat, "quant_relu", data, data, str(tmp_path / "after.tflite"))
    assert after == (0.0, 0.0)
    assert tf_qnets.snap_biases(qat).transitions == []      # a second call changes nothing

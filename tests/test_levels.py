"""Level sets: presets per bit width (paper, method.md Sec. 4), steps, offset and validation."""

import numpy as np
import pytest

from tf_qnets.core.levels import LevelSet, activation_levels, resolve_levels, weight_levels


# --- presets -----------------------------------------------------------------------------

def test_one_bit_weights_are_plus_minus_one():
    assert weight_levels(1).levels == (-1, 1)


def test_two_bit_weights_are_ternary():
    assert weight_levels(2).levels == (-1, 0, 1)


def test_three_bit_weights_default_to_powers_of_two():
    assert weight_levels(3).levels == (-4, -2, -1, 0, 1, 2, 4)


def test_three_bit_uniform_weight_scheme_is_minus_three_to_three():
    assert weight_levels(3, scheme="uniform").levels == (-3, -2, -1, 0, 1, 2, 3)


@pytest.mark.parametrize("bits", [4, 5, 6, 7, 8])
def test_four_to_eight_bit_weights_are_symmetric_uniform(bits):
    top = 2 ** (bits - 1) - 1
    assert weight_levels(bits).levels == tuple(range(-top, top + 1))


def test_five_bit_weights_match_the_paper_range():
    levels = weight_levels(5).levels
    assert (levels[0], levels[-1], len(levels) - 1) == (-15, 15, 30)


@pytest.mark.parametrize("bits", range(1, 9))
def test_unsigned_activations_are_zero_to_two_pow_k_minus_one(bits):
    assert activation_levels(bits).levels == tuple(range(2 ** bits))


def test_signed_activations_are_symmetric():
    assert activation_levels(1, signed=True).levels == (-1, 1)
    assert activation_levels(2, signed=True).levels == (-1, 0, 1)
    assert activation_levels(3, signed=True).levels == (-3, -2, -1, 0, 1, 2, 3)
    assert activation_levels(8, signed=True).levels == tuple(range(-127, 128))


# --- derived quantities --------------------------------------------------------------------

def test_steps_are_differences_of_neighbouring_levels():
    assert weight_levels(3).steps == (2, 1, 1, 1, 1, 2)
    assert weight_levels(1).steps == (2,)
    assert activation_levels(2).steps == (1, 1, 1)


def test_offset_makes_the_staircase_start_at_the_lowest_level():
    # o = -y_0; for symmetric sets this is half the total rise (method.md Sec. 1).
    for levels in (weight_levels(1), weight_levels(2), weight_levels(3), weight_levels(6)):
        assert levels.offset == -levels.levels[0]
        assert levels.offset == sum(levels.steps) / 2
    assert activation_levels(4).offset == 0
    assert LevelSet((2, 5, 9)).offset == -2


def test_number_of_steps_is_number_of_levels_minus_one():
    assert weight_levels(3).num_steps == 6
    assert activation_levels(8).num_steps == 255


def test_max_abs_is_the_largest_level_magnitude():
    assert weight_levels(3).max_abs == 4
    assert activation_levels(3).max_abs == 7
    assert LevelSet((-9, 0, 2)).max_abs == 9


def test_uniform_thresholds_lie_halfway_between_levels():
    np.testing.assert_array_equal(
        weight_levels(3).uniform_thresholds(), [-3.0, -1.5, -0.5, 0.5, 1.5, 3.0])


def test_uniformity_and_sign_flags():
    assert weight_levels(4).is_uniform and not weight_levels(3).is_uniform
    assert weight_levels(2).is_signed and not activation_levels(2).is_signed


def test_bits_counts_the_code_width():
    assert weight_levels(3).bits == 3
    assert weight_levels(1).bits == 1
    assert activation_levels(8).bits == 8


def test_levels_given_as_integral_floats_or_numpy_are_accepted():
    assert LevelSet([-1.0, 0.0, 2.0]).levels == (-1, 0, 2)
    assert LevelSet(np.array([0, 3, 6])).levels == (0, 3, 6)


def test_resolve_levels_accepts_bits_sequences_and_level_sets():
    assert resolve_levels(2, "weights", "w_bits").levels == (-1, 0, 1)
    assert resolve_levels(2, "activations", "a_bits").levels == (0, 1, 2, 3)
    assert resolve_levels(2, "activations", "a_bits", signed=True).levels == (-1, 0, 1)
    assert resolve_levels(3, "weights", "w_bits", weight_scheme="uniform").levels[-1] == 3
    assert resolve_levels([-2, 0, 2], "weights", "w_bits").levels == (-2, 0, 2)
    custom = LevelSet((0, 1))
    assert resolve_levels(custom, "weights", "w_bits") is custom


# --- validation ----------------------------------------------------------------------------

def test_unsorted_levels_are_rejected_with_the_sorted_suggestion():
    with pytest.raises(ValueError, match=r"sorted.*did you mean \[-1, 0, 2\]"):
        LevelSet((0, -1, 2))


def test_duplicate_levels_are_rejected():
    with pytest.raises(ValueError, match="duplicates"):
        LevelSet((-1, 0, 0, 1))


def test_non_integer_levels_are_rejected():
    with pytest.raises(TypeError, match="integers only"):
        LevelSet((-0.5, 0, 0.5))
    with pytest.raises(TypeError, match="integers only"):
        LevelSet((False, True))


def test_a_single_level_is_rejected():
    with pytest.raises(ValueError, match="at least two levels"):
        LevelSet((3,))


def test_more_than_256_levels_are_rejected():
    with pytest.raises(ValueError, match="at most 256"):
        LevelSet(tuple(range(257)))


def test_levels_spanning_more_than_255_are_rejected():
    with pytest.raises(ValueError, match="span at most 255"):
        LevelSet((-200, 0, 200))


def test_a_string_is_not_a_level_set():
    with pytest.raises(TypeError, match="sorted sequence of distinct integers"):
        LevelSet("012")


@pytest.mark.parametrize("bits", [0, 9, -1])
def test_bit_widths_outside_one_to_eight_are_rejected(bits):
    with pytest.raises(ValueError, match="w_bits"):
        weight_levels(bits)
    with pytest.raises(ValueError, match="a_bits"):
        activation_levels(bits)
    with pytest.raises(ValueError, match="bit width from 1 to 8"):
        resolve_levels(bits, "weights", "w_bits")


@pytest.mark.parametrize("bits", [2.0, "3", True, None])
def test_bit_widths_of_the_wrong_type_are_rejected(bits):
    with pytest.raises(TypeError, match="w_bits"):
        weight_levels(bits)


def test_resolve_levels_rejects_other_types_naming_the_argument():
    with pytest.raises(TypeError, match="`a_bits` must be an int bit width"):
        resolve_levels(2.5, "activations", "a_bits")


def test_unknown_weight_scheme_is_rejected():
    with pytest.raises(ValueError, match="weight_scheme"):
        weight_levels(3, scheme="log")

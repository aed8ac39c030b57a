"""tf_qnets.keras3.aliases: the Keras 2 alias names give Keras 3 quantizers."""

import keras
import numpy as np
import pytest

from tf_qnets.core.aliases import ALIASES
from tf_qnets.keras3 import QNetsQuantizer, QNetsWrapper
from tf_qnets.keras3.aliases import get_quantizer, quantizer_aliases


@pytest.mark.parametrize("alias, levels, role, gradient", [
    ("qnet_w1", (-1, 1), "weights", "wide"),
    ("qnet_w2", (-1, 0, 1), "weights", "exact"),
    ("qnet_w3", (-4, -2, -1, 0, 1, 2, 4), "weights", "smooth"),
    ("qnet_w3_uniform", (-3, -2, -1, 0, 1, 2, 3), "weights", "smooth"),
    ("qnet_w4", tuple(range(-7, 8)), "weights", "smooth"),
    ("qnet_a1", (0, 1), "activations", "smooth"),
    ("qnet_a3", tuple(range(8)), "activations", "smooth"),
    ("qnet_a1_signed", (-1, 1), "activations", "smooth"),
    ("qnet_a2_signed", (-1, 0, 1), "activations", "smooth"),
    ("qnet_a8", tuple(range(256)), "activations", "smooth"),
])
def test_alias_gives_the_paper_level_set(alias, levels, role, gradient):
    quantizer = get_quantizer(alias)
    assert isinstance(quantizer, QNetsQuantizer)
    assert (quantizer.levels.levels, quantizer.role, quantizer.gradient) == (levels, role, gradient)
    assert quantizer.train_thresholds is False


def test_the_names_are_the_shared_table_and_all_resolve():
    names = quantizer_aliases()
    assert names == sorted(ALIASES) and len(names) == 8 + 1 + 16
    for name in names:
        quantizer = get_quantizer(name)
        assert (quantizer.levels, quantizer.role, quantizer.gradient) == tuple(ALIASES[name])


def test_each_call_gives_a_new_quantizer():
    assert get_quantizer("qnet_w2") is not get_quantizer("qnet_w2")


def test_none_and_quantizers_pass_through():
    quantizer = QNetsQuantizer((-1, 0, 1))
    assert get_quantizer(None) is None
    assert get_quantizer(quantizer) is quantizer


def test_a_serialized_config_deserializes():
    original = get_quantizer("qnet_a2_signed")
    restored = get_quantizer(keras.saving.serialize_keras_object(original))
    assert type(restored) is QNetsQuantizer and restored is not original
    assert restored.get_config() == original.get_config()


def test_unknown_alias_suggests_close_names():
    with pytest.raises(ValueError, match=r"Unknown quantizer alias 'qnet_w33'.*Did you mean.*qnet_w3"):
        get_quantizer("qnet_w33")


def test_other_types_and_other_configs_are_refused_naming_identifier():
    with pytest.raises(TypeError, match="`identifier` must be a quantizer alias"):
        get_quantizer(3)
    config = keras.saving.serialize_keras_object(keras.layers.Dense(2))
    with pytest.raises(TypeError, match="`identifier`.*does not describe a QNetsQuantizer"):
        get_quantizer(config)


def test_alias_quantizers_work_in_a_wrapper():
    layer = QNetsWrapper(keras.layers.Dense(3, activation="relu", name="d"),
                         weight_quantizer=get_quantizer("qnet_w2"),
                         output_quantizer=get_quantizer("qnet_a2"))
    y = keras.ops.convert_to_numpy(layer(np.ones((2, 4), "float32"), training=False))
    # alpha = beta = 1: outputs are levels of {0, 1, 2, 3}.
    assert set(np.unique(y)) <= {0.0, 1.0, 2.0, 3.0}

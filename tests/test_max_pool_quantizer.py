"""A ReLU read only by a max pooling is quantized after the pooling: the same model, exported the same.

``tf_qnets.core.plan`` moves the activation quantizer onto the pooling
(``maxpool(Q(x)) = Q(maxpool(x))``); the export description moves it back onto the ReLU
(:func:`tf_qnets.core.network.staircases_before_max_pools`), so the file computes the
staircase inside the convolution's requantization as before and pools int8 codes.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.core.levels import activation_levels  # noqa: E402
from tf_qnets.core.network import (  # noqa: E402
    LayerDescription, NodeDescription, Staircase, staircases_before_max_pools)
from tf_qnets.keras2.backend import keras  # noqa: E402
from tf_qnets.keras2.describe_network import describe_network  # noqa: E402


def pooled_cnn():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    h = inputs
    for index, filters in enumerate((8, 8)):
        h = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"c{index}")(h)
        h = keras.layers.BatchNormalization(name=f"bn{index}")(h)
        h = keras.layers.ReLU(name=f"r{index}")(h)
        h = keras.layers.MaxPooling2D(name=f"p{index}")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(h))


def _images(count, seed):
    return np.random.default_rng(seed).uniform(0, 1, (count, 16, 16, 3)).astype(np.float32)


def _qat():
    return tf_qnets.quantize_model(pooled_cnn(), w_bits=3, a_bits=3, first_last="int8",
                                   calibration_data=_images(32, 1), verbose=0)


def test_the_pooled_output_is_the_pooling_of_the_staircase():
    qat = _qat()
    pool = qat.get_layer("quant_p1")
    (_, _, quantizer, variables), = [state for state in pool.quantizer_states()
                                     if state[0] == "output"]
    relu_out = keras.Model(qat.inputs, qat.get_layer("r1").get_output_at(-1))(_images(8, 2))
    staircase = quantizer(relu_out, False, variables)
    expected = tf.nn.max_pool2d(staircase, 2, 2, "VALID").numpy()
    got = keras.Model(qat.inputs, pool.output)(_images(8, 2)).numpy()
    np.testing.assert_array_equal(got, expected)
    alpha = float(variables["alpha"].numpy())
    assert np.allclose(got / alpha, np.round(got / alpha), atol=1e-5)     # on the levels


def test_the_description_puts_the_staircase_back_and_the_file_agrees(tmp_path):
    qat = _qat()
    network = describe_network(qat)
    assert isinstance(network.node_by_name["r1"].layer.output_quantizer, Staircase)
    assert network.node_by_name["quant_p1"].layer.output_quantizer is None
    report = tf_qnets.export_tflite(qat, str(tmp_path / "m.tflite"), _images(32, 1),
                                    verify_data=_images(64, 3))
    assert "r1" in report.staircases["aligned"]
    assert report.verification.agreement == 1.0 and report.verification.max_abs_diff < 1e-4


def test_a_pooling_whose_input_is_read_twice_keeps_its_staircase():
    staircase = Staircase(0.5, 2.0, np.array([0.5, 1.5, 2.5]), activation_levels(2))
    relu = LayerDescription("relu", "ReLU", {}, {}, (None, 4, 4, 1))
    pool = LayerDescription("pool", "MaxPooling2D", {}, {}, (None, 4, 4, 1),
                            output_quantizer=staircase)
    other = LayerDescription("other", "Flatten", {}, {}, (None, 4, 4, 1))
    nodes = [NodeDescription(relu, ["x"], ["y"]), NodeDescription(pool, ["y"], ["z"]),
             NodeDescription(other, ["y"], ["w"])]
    kept = staircases_before_max_pools(nodes)
    assert kept[1].layer.output_quantizer is staircase and kept[0].layer.output_quantizer is None
    moved = staircases_before_max_pools(nodes[:2])
    assert moved[0].layer.output_quantizer is staircase and moved[1].layer.output_quantizer is None
    assert nodes[1].layer.output_quantizer is staircase          # the input list is untouched

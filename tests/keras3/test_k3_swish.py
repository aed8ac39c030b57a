"""EfficientNet's swish and squeeze-and-excitation on Keras 3: the same plan as tf_keras.

``quantize_model`` moves ``Conv2D(activation="swish"/"sigmoid")``'s activation onto an
``Activation`` layer of its own (the same function; the user's model keeps its layers), the
BN or linear convolution before each swish/sigmoid staircase gets the int8 output quantizer
the file stores it with, and the export lowers every such staircase as a table of those int8
codes (tests/test_export_swish.py checks the file's values under tf_keras).
"""

import keras
import numpy as np

import tf_qnets
from tf_qnets.keras3 import QNetsWrapper
from tf_qnets.keras3.int8 import Int8OutputQuantizer

STAIRCASES = ["stem_swish", "se_reduce_activation", "se_expand_activation"]


def _block():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("swish", name="stem_swish")(x)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    s = keras.layers.Conv2D(4, 1, activation="swish", name="se_reduce")(s)
    s = keras.layers.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
    x = keras.layers.Multiply(name="se_mul")([x, s])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


def test_swish_staircases_read_int8_codes_as_under_tf_keras():
    from tf_qnets.export.describe import describe
    from tf_qnets.export.plan import make_plan

    model = _block()
    x = np.random.default_rng(0).uniform(-1, 1, (32, 12, 12, 3)).astype("float32")
    qat = tf_qnets.quantize_model(model, w_bits=4, a_bits=4, calibration_data=x,
                                  first_last="int8", verbose=0)
    assert model.get_layer("se_reduce").get_config()["activation"] in ("swish", "silu")  # untouched
    assert qat.get_layer("se_reduce").layer.get_config()["activation"] == "linear"
    for name in ("stem_bn", "se_reduce", "se_expand"):
        layer = qat.get_layer(name)
        assert isinstance(layer, QNetsWrapper)
        assert isinstance(layer.output_quantizer, Int8OutputQuantizer), name
    claims = {name: rewrite.name for name, rewrite in make_plan(describe(qat)[0]).claims.items()}
    assert [claims[name] for name in STAIRCASES] == ["code staircase"] * 3

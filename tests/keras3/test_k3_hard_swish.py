"""MobileNetV3's hard-swish and squeeze-and-excitation on Keras 3: the same plan as tf_keras.

``x + 3.0`` and ``* (1 / 6)`` are ``keras.ops`` calls in a Keras 3 graph; the export
describes them as operations and lowers the staircase on ``relu6(x + 3)`` as the ADD's own
requantization and ``* (1 / 6)`` as a scale that keeps the codes; ``Multiply`` gets the int8
output quantizer the file stores it with (tests/test_export_hard_swish.py checks the file's
values under tf_keras).
"""

import keras
import numpy as np

import tf_qnets
from tf_qnets.keras3 import QNetsWrapper
from tf_qnets.keras3.int8 import Int8OutputQuantizer


def _block():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    gate = keras.layers.ReLU(6.0, name="stem_gate")(x + 3.0) * (1.0 / 6.0)
    x = keras.layers.Multiply(name="stem_hswish")([x, gate])
    x = keras.layers.Conv2D(6, 1, use_bias=False, name="project")(x)
    x = keras.layers.BatchNormalization(name="project_bn")(x)
    x = keras.layers.ReLU(name="project_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


def test_hard_sigmoid_lowers_as_under_tf_keras():
    from tf_qnets.export.describe import describe
    from tf_qnets.export.plan import make_plan

    x = (np.random.default_rng(0).integers(0, 256, (32, 12, 12, 3)) / 255.0).astype("float32")
    qat = tf_qnets.quantize_model(_block(), w_bits=4, a_bits=4, calibration_data=x,
                                  first_last="int8", verbose=0)
    product = qat.get_layer("stem_hswish")
    assert isinstance(product, QNetsWrapper)
    assert isinstance(product.output_quantizer, Int8OutputQuantizer)
    plan = make_plan(describe(qat)[0])
    claims = {name: rewrite.name for name, rewrite in plan.claims.items()}
    assert claims["stem_gate"] == "add staircase"
    scales = [node.layer.name for node in plan.nodes if node.layer.class_name == "op.Multiply"]
    assert len(scales) == 1 and claims[scales[0]] == "constant scale"

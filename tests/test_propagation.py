"""Calibration walks the model once (tf_qnets.keras2.propagation) and gives what layer-by-layer
sub-models give: each activation quantizer calibrated on what it sees with every quantizer
before it active, each BatchNormalization re-estimated on its new inputs."""

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras
from tf_qnets.core.init_math import mse_scales
from tf_qnets.keras2.init import limit_calibration_batches
from tf_qnets.keras2.propagation import live_bytes_per_sample, propagate


def residual_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((10, 10, 2))
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    y = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="c2")(x)
    y = keras.layers.BatchNormalization(name="bn2")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.ReLU(name="r2")(x)
    x = keras.layers.Concatenate(name="cat")([x, keras.layers.MaxPooling2D(1, name="mp")(x)])
    x = keras.layers.Conv2D(4, 1, activation="relu", name="c3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def test_propagate_gives_the_model_outputs():
    model = residual_model()
    batches = [np.random.default_rng(i).normal(size=(4, 10, 10, 2)).astype("float32")
               for i in range(3)]
    seen = []

    def visit(layer, inputs, compute):
        seen.append(layer.name)
        return compute()

    outputs, = propagate(model, batches, visit)
    for batch, out in zip(batches, outputs):
        np.testing.assert_allclose(np.asarray(out), model(batch, training=False).numpy(),
                                   rtol=1e-5, atol=1e-5)
    assert seen.index("add") > seen.index("bn2") and seen.index("cat") > seen.index("mp")


def test_calibration_equals_sub_models_with_the_earlier_quantizers_active():
    model = residual_model()
    data = np.random.default_rng(0).normal(size=(48, 10, 10, 2)).astype("float32")
    qat = tf_qnets.quantize_model(model, w_bits=3, a_bits=3, calibration_data=data, verbose=0)
    batches = [data[i:i + 16] for i in range(0, 48, 16)]
    # Reference: for each activation quantizer, the sub-model up to its layer, that quantizer
    # bypassed (the ones before it active, as calibrated): it must reproduce alpha and beta.
    checked = 0
    for wrapper, role, _, quantizer, variables in tf_qnets.quantizer_states(qat):
        if role == "weights" or not isinstance(quantizer, tf_qnets.QNetsQuantizer):
            continue
        quantizer.bypass = True
        try:
            probe = keras.Model(qat.inputs, wrapper.output)
            sample = np.concatenate([probe(b, training=False).numpy().ravel() for b in batches])
        finally:
            quantizer.bypass = False
        alpha, beta = mse_scales(sample, quantizer.levels)
        assert float(variables["beta"].numpy()) == pytest.approx(beta, rel=1e-4), wrapper.name
        assert float(variables["alpha"].numpy()) == pytest.approx(alpha, rel=1e-4), wrapper.name
        checked += 1
    assert checked >= 3


def test_large_activations_limit_the_calibration_batches(monkeypatch):
    model = residual_model()
    per_sample = live_bytes_per_sample(model)
    assert per_sample >= 3 * 4 * 10 * 10 * 6   # at least three 10x10x6 float32 maps
    batches = [np.zeros((8, 10, 10, 2), np.float32) for _ in range(5)]
    monkeypatch.setattr(tf_qnets.keras2.init, "CALIBRATION_MEMORY_BYTES", 20 * per_sample)
    kept = limit_calibration_batches(model, batches)
    assert len(kept) == 2                      # 16 samples fit 20, 24 do not
    monkeypatch.setattr(tf_qnets.keras2.init, "CALIBRATION_MEMORY_BYTES", 1.0)
    assert len(limit_calibration_batches(model, batches)) == 1   # always at least one batch

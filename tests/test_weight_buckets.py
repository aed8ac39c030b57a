"""Weight quantizers run padded to a few sizes in training, so that XLA compiles few kernels.

The first training step compiles one forward and one backward kernel per input shape a
quantizer pass sees; a network's kernels have dozens of shapes. Padded to the sizes of
``ELEMENTWISE_BUCKETS`` they share programs. These tests pin that the padding happens and
that it changes nothing a user can see: values, gradients, a training step.
"""

import numpy as np
import pytest

import tf_qnets
from tf_qnets.core.gap import GAP_SAMPLE_SIZE
from tf_qnets.core.levels import weight_levels
from tf_qnets.keras2 import quantizer as quantizer_module
from tf_qnets.keras2.backend import keras, tf
from tf_qnets.tf.staircase import ELEMENTWISE_BUCKETS, run_padded_to_bucket, soft_staircase

from conftest import build_sequential


@pytest.mark.parametrize("gradient", ["exact", "smooth"])
def test_padding_keeps_the_staircase_and_its_gradients(gradient):
    levels = weight_levels(3)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(0.0, 0.4, (3, 3, 5, 7)).astype(np.float32))
    upstream = tf.constant(rng.normal(size=(3, 3, 5, 7)).astype(np.float32))
    thresholds = tf.constant([-1.25, -0.75, -0.25, 0.25, 0.75, 1.25], tf.float32)
    alpha, beta, temperature = tf.constant(0.3), tf.constant(2.0), tf.constant(10.0)

    def value_and_gradients(run):
        with tf.GradientTape() as tape:
            tape.watch([x, alpha, beta])
            y = run(lambda v: soft_staircase(v, alpha, beta, thresholds, temperature, levels,
                                             gradient=gradient), x)
            loss = tf.reduce_sum(y * upstream)
        return [y] + tape.gradient(loss, [x, alpha, beta])

    plain = value_and_gradients(lambda f, v: f(v))
    padded = value_and_gradients(run_padded_to_bucket)
    assert padded[0].shape == x.shape
    for got, want in zip(padded, plain):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_sizes_outside_the_buckets_run_unpadded():
    seen = []

    def record(v):
        seen.append(v.shape.num_elements())
        return v

    run_padded_to_bucket(record, tf.zeros([ELEMENTWISE_BUCKETS[-1] + 1]))
    run_padded_to_bucket(record, tf.zeros([ELEMENTWISE_BUCKETS[0]]))
    run_padded_to_bucket(record, tf.zeros([3, ELEMENTWISE_BUCKETS[0] + 1]))
    assert seen == [ELEMENTWISE_BUCKETS[-1] + 1, ELEMENTWISE_BUCKETS[0], ELEMENTWISE_BUCKETS[2]]


def _quantized(calibration):
    return tf_qnets.quantize_model(build_sequential(), w_bits=3, a_bits=3,
                                   calibration_data=calibration, verbose=0)


def test_weight_passes_in_training_see_bucket_sizes_only(monkeypatch):
    calibration = np.random.default_rng(1).random((16, 8, 8, 2)).astype(np.float32)
    qat = _quantized(calibration)
    sizes = {"weights": set(), "gap": set()}
    soft, hard_kernel = quantizer_module.soft_staircase, quantizer_module.hard_staircase_kernel

    def recording_soft(values, *args, **kwargs):
        if values.shape.rank == 1:
            sizes["weights"].add(values.shape.num_elements())
        return soft(values, *args, **kwargs)

    def recording_hard_kernel(levels, implementation):
        kernel = hard_kernel(levels, implementation)

        def run(values, *args):
            sizes["gap"].add(values.shape.num_elements())
            return kernel(values, *args)
        return run

    monkeypatch.setattr(quantizer_module, "soft_staircase", recording_soft)
    monkeypatch.setattr(quantizer_module, "hard_staircase_kernel", recording_hard_kernel)
    qat.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(calibration, np.zeros(16, np.int64), epochs=1, batch_size=8, verbose=0,
            callbacks=[tf_qnets.TemperatureScheduler()])
    # conv_mid (216 values), dwconv (54) and dense_mid (768) share the smallest bucket
    assert sizes["weights"] == {ELEMENTWISE_BUCKETS[0]}
    assert sizes["gap"] == {GAP_SAMPLE_SIZE}


def test_a_training_step_is_the_same_with_and_without_the_padding(monkeypatch):
    rng = np.random.default_rng(2)
    images = rng.random((16, 8, 8, 2)).astype(np.float32)
    labels = rng.integers(0, 4, 16)

    def one_step():
        qat = _quantized(images)
        qat.compile(keras.optimizers.Adam(1e-2),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        loss = qat.train_on_batch(images, labels)
        return loss, [w.numpy() for w in qat.trainable_weights]

    padded_loss, padded_weights = one_step()
    monkeypatch.setattr(quantizer_module, "run_padded_to_bucket", lambda f, v, **_: f(v))
    plain_loss, plain_weights = one_step()
    np.testing.assert_allclose(padded_loss, plain_loss, rtol=1e-6)
    for got, want in zip(padded_weights, plain_weights):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

"""QNetsQuantizer, QNetsWrapper and the kernel computations, against numpy and plain Keras layers."""

import keras
import numpy as np
import pytest
from keras import ops

from tf_qnets.core import staircase as core
from tf_qnets.core.levels import activation_levels, weight_levels
from tf_qnets.keras3.kernels import call_with_kernel
from tf_qnets.keras3.quantizer import QNetsQuantizer
from tf_qnets.keras3.wrapper import QNetsWrapper


def _numpy(value):
    return ops.convert_to_numpy(value)


def _quantizer(levels, alpha=0.5, beta=1.5, thresholds=None, temperature=7.0, **kwargs):
    q = QNetsQuantizer(levels.levels, **kwargs)
    q.build(None)
    q.assign(alpha, beta, levels.uniform_thresholds() if thresholds is None else thresholds)
    q.temperature.assign(temperature)
    return q


def test_quantizer_is_hard_at_inference_and_soft_in_training():
    levels = weight_levels(3)
    b = np.array([-2.8, -1.4, -0.05, 0.05, 1.3, 3.1], "float32")
    q = _quantizer(levels, thresholds=b, temperature=7.0)
    x = np.random.default_rng(0).uniform(-4, 4, (5, 7)).astype("float32")
    np.testing.assert_allclose(_numpy(q(x, training=False)), core.hard_staircase(x, 0.5, 1.5, b, levels),
                               atol=1e-6)
    np.testing.assert_allclose(_numpy(q(x, training=True)),
                               core.soft_staircase(x, 0.5, 1.5, b, 7.0, levels), atol=1e-5)


def test_training_forward_is_hard_from_hard_forward_from():
    levels = activation_levels(2)
    x = np.linspace(-1, 4, 41).astype("float32")
    default = _quantizer(levels, temperature=100.0, role="activations")
    np.testing.assert_allclose(_numpy(default(x, training=True)),
                               core.hard_staircase(x, 0.5, 1.5, levels.uniform_thresholds(), levels),
                               atol=1e-6)
    paper = _quantizer(levels, temperature=100.0, role="activations", hard_forward_from=None)
    np.testing.assert_allclose(_numpy(paper(x, training=True)),
                               core.soft_staircase(x, 0.5, 1.5, levels.uniform_thresholds(), 100.0,
                                                   levels), atol=1e-5)


def test_quantizer_variables_and_trainability():
    q = _quantizer(weight_levels(2))
    assert [v.name for v in q.trainable_weights] == ["alpha", "beta"]
    assert sorted(v.name for v in q.non_trainable_weights) == ["gap", "temperature", "thresholds"]
    trained = _quantizer(weight_levels(2), train_thresholds=True)
    assert sorted(v.name for v in trained.trainable_weights) == ["alpha", "beta", "thresholds"]


def test_quantizer_config_round_trip():
    q = QNetsQuantizer((0, 1, 2, 3), role="activations", gradient="smooth", train_thresholds=True,
                       hard_forward_from=None, name="q")
    again = QNetsQuantizer.from_config(q.get_config())
    assert again.get_config() == q.get_config()
    assert again.levels.levels == (0, 1, 2, 3)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"role": "kernel"}, ValueError, "`role`"),
    ({"gradient": "steep"}, ValueError, "`gradient`"),
    ({"train_thresholds": 1}, TypeError, "`train_thresholds`"),
    ({"hard_forward_from": "100"}, TypeError, "`hard_forward_from`"),
    ({"hard_forward_from": 0.0}, ValueError, "`hard_forward_from`"),
])
def test_quantizer_bad_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        QNetsQuantizer((-1, 0, 1), **kwargs)


KERNEL_LAYERS = [
    (lambda: keras.layers.Dense(5, activation="relu"), (3, 6)),
    (lambda: keras.layers.Conv1D(4, 3, padding="causal", dilation_rate=2, activation="tanh"), (2, 11, 3)),
    (lambda: keras.layers.Conv1D(4, 3, strides=2, padding="valid"), (2, 11, 3)),
    (lambda: keras.layers.Conv2D(4, 3, strides=2, padding="same", groups=2), (2, 7, 7, 4)),
    (lambda: keras.layers.Conv2D(3, 2, use_bias=False), (2, 5, 5, 2)),
    (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same",
                                          activation="relu"), (2, 6, 6, 3)),
]


@pytest.mark.parametrize("make, shape", KERNEL_LAYERS)
def test_call_with_kernel_reproduces_the_layer(make, shape):
    layer = make()
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    want = _numpy(layer(x))
    if layer.bias is not None:
        layer.bias.assign(np.random.default_rng(2).normal(size=layer.bias.shape).astype("float32"))
        want = _numpy(layer(x))
    np.testing.assert_allclose(_numpy(call_with_kernel(layer, x, layer.kernel)), want, atol=1e-5)


@pytest.mark.parametrize("make, shape", KERNEL_LAYERS)
def test_wrapper_at_inference_computes_the_layer_on_the_hard_kernel(make, shape):
    """Reference: the same float layer with its kernel replaced by the numpy hard staircase
    of the kernel, then the numpy hard staircase of the output."""
    x = np.random.default_rng(3).normal(size=shape).astype("float32")
    wrapper = QNetsWrapper(make(), weight_quantizer=QNetsQuantizer((-4, -2, -1, 0, 1, 2, 4)),
                           output_quantizer=QNetsQuantizer((-3, -2, -1, 0, 1, 2, 3),
                                                           role="activations"))
    wrapper(x)
    kernel = _numpy(wrapper.layer.kernel)
    w_b = np.array([-2.5, -1.2, -0.05, 0.05, 1.4, 2.9], "float32")
    wrapper.weight_quantizer.assign(0.1, 1.25 * 4 / np.max(np.abs(kernel)), w_b)
    wrapper.output_quantizer.assign(0.3, 2.0, np.arange(6, dtype="float32") - 2.5)
    reference = make()
    reference(x)
    reference.set_weights(wrapper.layer.get_weights())
    q_kernel = core.hard_staircase(kernel, 0.1, 1.25 * 4 / np.max(np.abs(kernel)), w_b, weight_levels(3))
    reference.kernel.assign(q_kernel)
    want = core.hard_staircase(_numpy(reference(x)), 0.3, 2.0, np.arange(6) - 2.5,
                               activation_levels(3, signed=True))
    np.testing.assert_allclose(_numpy(wrapper(x, training=False)), want, atol=1e-5)


def test_wrapper_trains_the_kernel_and_the_scales():
    model = keras.Sequential([
        keras.Input((6,)),
        QNetsWrapper(keras.layers.Dense(4, activation="relu", name="d"),
                     weight_quantizer=QNetsQuantizer((-1, 0, 1), name="wq"),
                     output_quantizer=QNetsQuantizer((0, 1, 2, 3), role="activations", name="oq")),
        keras.layers.Dense(1),
    ])
    layer = model.layers[0]
    layer.weight_quantizer.temperature.assign(5.0)
    layer.output_quantizer.temperature.assign(5.0)
    before = {v.path: _numpy(v).copy() for v in layer.weights}
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
    x = np.random.default_rng(4).normal(size=(32, 6)).astype("float32")
    model.fit(x, np.sum(x, axis=1, keepdims=True), epochs=2, batch_size=16, verbose=0)
    changed = {v.path for v in layer.weights if not np.array_equal(before[v.path], _numpy(v))}
    trainable = {v.path for v in layer.trainable_weights}
    # the training calls also record the quantization gap (tf_qnets.keras3.gap), a monitor
    assert changed == trainable | {"sequential/d/wq/gap", "sequential/d/oq/gap"}
    assert all(np.all(np.isfinite(_numpy(v))) for v in layer.weights)


def test_wrapper_refuses_a_weight_quantizer_on_a_layer_without_a_kernel_computation():
    with pytest.raises(TypeError, match=r"'emb' \(Embedding\).*exclude=\['emb'\]"):
        QNetsWrapper(keras.layers.Embedding(10, 4, name="emb"),
                     weight_quantizer=QNetsQuantizer((-1, 0, 1)))
    with pytest.raises(ValueError, match="weight_quantizer, an output_quantizer"):
        QNetsWrapper(keras.layers.ReLU(name="r"))

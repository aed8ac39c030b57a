"""What a training step's graph holds per quantizer, and how often the kernels are traced.

A ``keras.applications`` network has a hundred quantizers or more; every op that the soft
staircase adds to the train step is built in Python, optimised by Grappler and scanned by
XLA's passes before the first step runs. These tests pin the structure that keeps that
first step short: one call op per pass, kernels traced once for every input shape, the
kernel choice made once per call, and one trace of the whole train step.
"""

import numpy as np
import pytest

import tf_qnets
from tf_qnets.core.levels import LevelSet, activation_levels
from tf_qnets.keras2.backend import keras, tf
from tf_qnets.keras2.schedule import build_optimizer_slots
from tf_qnets.tf import staircase
from tf_qnets.tf.staircase import soft_staircase


def _inlined_size(graph_def):
    """Ops of ``graph_def`` once every call Grappler inlines is inlined (XLA kernels: 1)."""
    library = {f.signature.name: f for f in graph_def.library.function}
    sizes = {}

    def size(nodes):
        total = 0
        for node in nodes:
            total += 1
            if node.op in ("PartitionedCall", "StatefulPartitionedCall"):
                callees = [node.attr["f"].func.name]
            elif node.op in ("If", "StatelessIf"):
                callees = [node.attr["then_branch"].func.name, node.attr["else_branch"].func.name]
            elif node.op in ("Case", "StatelessCase"):
                callees = [branch.name for branch in node.attr["branches"].list.func]
            else:
                callees = []
            for name in callees:
                function = library[name]
                if "_XlaMustCompile" in function.attr:
                    continue
                if name not in sizes:
                    sizes[name] = size(function.node_def)
                total += sizes[name]
        return total

    return size(graph_def.node)


def _gradient_graph(levels, gradient, quantizers):
    """The graph of value and gradients of ``quantizers`` staircases in a row."""
    thresholds = tf.constant(np.arange(levels.num_steps, dtype=np.float32) + 0.5)

    @tf.function
    def step(x, temperature):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = x
            for _ in range(quantizers):
                y = soft_staircase(y, 1.0, 1.0, thresholds, temperature, levels,
                                   gradient=gradient, hard_forward_from=100.0)
            loss = tf.reduce_sum(y)
        return tape.gradient(loss, x)

    return step.get_concrete_function(tf.TensorSpec([2, 8, 8, 3]),
                                      tf.TensorSpec([])).graph.as_graph_def()


@pytest.mark.parametrize("gradient", ["smooth", "exact"])
def test_each_quantizer_adds_a_bounded_number_of_ops_to_the_step(gradient):
    # 4-bit activations: six kernels to choose from (plain sum, uniform widths 0..7).
    levels = activation_levels(4)
    one = _inlined_size(_gradient_graph(levels, gradient, 1))
    eleven = _inlined_size(_gradient_graph(levels, gradient, 11))
    per_quantizer = (eleven - one) / 10
    # One choice (a compiled kernel), one forward and one gradient call, inlined: their
    # switches over the kernels, the scale gradients and their fallbacks, about 180 ops.
    # With the choice and the switches built at every call site it was about 550.
    assert per_quantizer < 300, per_quantizer


def test_kernels_are_traced_once_for_any_input_shape():
    # A level set no other test uses: the kernels are cached per level set and process.
    levels = LevelSet((-5, -2, -1, 0, 2, 3, 7))
    thresholds = tf.constant([-3.5, -1.5, -0.5, 0.5, 2.5, 4.5])

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(soft_staircase(x, 1.0, 1.0, thresholds, 4.0, levels))
        return tape.gradient(loss, x)

    for shape in [(3,), (2, 5), (4, 3, 3, 8), (1, 7, 7, 2), (5, 9)]:
        assert step(tf.ones(shape)).shape == shape
    kernels = staircase._kernel_variants(levels, "exact", "xla")
    counts = [(k.forward.experimental_get_tracing_count(),
               k.backward.experimental_get_tracing_count()) for k in kernels]
    # Each kernel is traced at most once per dtype, whatever the shapes (only the kernels
    # a switch can pick are traced at all: every branch of it, once).
    assert all(f <= 1 and b <= 1 for f, b in counts), counts
    assert any(f == 1 for f, _ in counts), counts


def test_the_output_and_its_gradient_keep_the_static_shape_in_a_graph():
    levels = activation_levels(3)
    seen = {}

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = soft_staircase(x, 1.0, 1.0, np.arange(7, dtype=np.float32) + 0.5, 3.0, levels,
                               gradient="smooth")
            loss = tf.reduce_sum(y)
        d_x = tape.gradient(loss, x)
        seen["y"], seen["d_x"] = y.shape.as_list(), d_x.shape.as_list()
        return y

    step.get_concrete_function(tf.TensorSpec([None, 4, 4, 3]))
    assert seen == {"y": [None, 4, 4, 3], "d_x": [None, 4, 4, 3]}
    assert step(tf.ones([2, 4, 4, 3])).shape == (2, 4, 4, 3)


def _small_qat_model():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(4, 3, padding="same")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(3)(h)
    model = keras.Model(inputs, outputs)
    return tf_qnets.quantize_model(model, w_bits=3, a_bits=3, calibration_data=_data()[0])


def _data():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(16, 8, 8, 1)).astype("float32"),
            rng.integers(0, 3, 16).astype("int64"))


@pytest.mark.parametrize("scheduler", [True, False])
def test_fit_traces_its_train_step_once_with_the_scheduler(scheduler):
    # tf_keras creates Adam's moments inside the first step, and a tf.function whose first
    # trace creates variables is traced again: the scheduler builds them before that step.
    qat = _small_qat_model()
    qat.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    callbacks = [tf_qnets.TemperatureScheduler()] if scheduler else []
    qat.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=callbacks)
    traces = qat.train_function.experimental_get_tracing_count()
    assert traces == (1 if scheduler else 2)
    assert qat.optimizer.iterations.numpy() == 2


def test_building_the_optimizer_early_gives_the_same_training():
    x, y = _data()
    results = []
    for early in (False, True):
        keras.utils.set_random_seed(3)
        qat = _small_qat_model()
        qat.compile(keras.optimizers.Adam(1e-2),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        if early:
            build_optimizer_slots(qat)
            assert len(qat.optimizer.variables()) == 1 + 2 * len(qat.trainable_variables)
        qat.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        results.append([v.numpy() for v in qat.trainable_variables])
    for before, after in zip(*results):
        np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def test_optimizers_without_build_or_already_built_are_left_alone():
    qat = _small_qat_model()
    qat.compile(keras.optimizers.legacy.SGD(0.1), "mse")
    build_optimizer_slots(qat)                  # a legacy optimizer: nothing to build
    qat.compile(keras.optimizers.Adam(1e-3), "mse")
    build_optimizer_slots(qat)
    variables = list(qat.optimizer.variables())
    build_optimizer_slots(qat)                  # built: unchanged
    assert [id(v) for v in qat.optimizer.variables()] == [id(v) for v in variables]
    wrapped = _small_qat_model()
    wrapped.compile(keras.mixed_precision.LossScaleOptimizer(keras.optimizers.Adam(1e-3)), "mse")
    build_optimizer_slots(wrapped)
    assert wrapped.optimizer.inner_optimizer._built
    uncompiled = _small_qat_model()
    build_optimizer_slots(uncompiled)           # no optimizer: nothing to do


def test_a_large_network_s_first_batch_is_announced_once(capsys, monkeypatch):
    from tf_qnets.keras2 import schedule

    qat = _small_qat_model()
    qat.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    fit = dict(batch_size=8, epochs=1, callbacks=[tf_qnets.TemperatureScheduler()])
    qat.fit(x, y, verbose=1, **fit)          # a small network: nothing said
    assert "first batch" not in capsys.readouterr().out
    monkeypatch.setattr(schedule, "FIRST_BATCH_NOTICE_QUANTIZERS", 2)
    qat = _small_qat_model()
    qat.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, verbose=0, **fit)          # no progress shown: nothing said either
    assert "first batch" not in capsys.readouterr().out
    qat = _small_qat_model()
    qat.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, verbose=1, **fit)
    out = capsys.readouterr().out
    assert "the first batch traces the training step of" in out and "docs/train.md" in out
    qat.fit(x, y, verbose=1, **fit)          # traced already: said once
    assert "first batch" not in capsys.readouterr().out

"""Shared fixtures: small float models (tf_keras) and seeded random data.

Every model here is tiny so that a test module runs in seconds on two CPU cores.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite also runs QKeras (the accuracy benchmark's peer), which builds on tf.keras: the
# test processes run with tf.keras = Keras 2, as a QKeras user's process would. tf_qnets
# itself uses tf_keras either way; tests/test_architecture.py runs the Keras 2 path with the
# variable unset (the default) in subprocesses.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# Subprocesses (distribution workers, scripts) import the tf_qnets under test, not whichever
# checkout an editable install points at.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != _ROOT])

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# tests/keras3 runs Keras 3 in its own processes, one per backend (tests/test_keras3_backends.py).
collect_ignore = ["keras3"]

import tf_qnets  # noqa: E402,F401
from tf_qnets.keras2.backend import keras  # noqa: E402


def build_sequential(seed=0, num_classes=4):
    """Conv2D(fused relu) - Conv2D - BN - ReLU - MaxPool - DepthwiseConv2D - ReLU - Flatten - Dense - Dense."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", input_shape=(8, 8, 2),
                            name="conv_first"),
        keras.layers.Conv2D(6, 3, padding="same", name="conv_mid"),
        keras.layers.BatchNormalization(name="bn_mid"),
        keras.layers.ReLU(name="relu_mid"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.DepthwiseConv2D(3, padding="same", name="dwconv"),
        keras.layers.ReLU(name="relu_dw"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(8, activation="relu", name="dense_mid"),
        keras.layers.Dense(num_classes, name="dense_last"),
    ], name="small_sequential")


def cut_export_offset(qat, layer_name, calibration, images, path):
    """The model ``qat`` cut after ``layer_name``, exported to ``path`` and run on ``images``
    with the default kernels (XNNPACK): ``(largest |file - Keras| / step, fraction of values
    off by a quarter step or more)``, ``step`` the smallest gap between the Keras values."""
    from tf_qnets.export import export_tflite
    from tf_qnets.runtime import load_interpreter, predict

    cut = keras.Model(qat.inputs, qat.get_layer(layer_name).get_output_at(-1))
    export_tflite(cut, path, calibration)
    expected = np.asarray(cut(images, training=False), np.float64)
    got = np.asarray(predict(load_interpreter(path), images), np.float64)
    step = float(np.min(np.diff(np.unique(np.round(expected.ravel(), 6)))))
    off = np.abs(expected - got) / step
    return float(np.max(off)), float(np.mean(off >= 0.25))


def vary_batch_norms(model, seed=2, signs=False):
    """Give every BatchNormalization of ``model`` per-channel factors of various sizes (and
    of both signs with ``signs``), an offset, and moving statistics away from 0 and 1."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            gamma = gamma * rng.uniform(0.5, 2.0, gamma.shape)
            if signs:
                gamma = gamma * np.sign(rng.normal(size=gamma.shape))
            layer.set_weights([gamma, beta + 0.2, mean + 0.05, var * 2.0])
    return model


def build_subclassed(features=4):
    """A built subclassed model (tf_qnets refuses these: it needs the layer graph)."""

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    model = Net()
    model(np.zeros((1, features), "float32"))
    return model


def build_residual(seed=0, num_classes=3):
    """A Functional model with a residual Add, a Concatenate, Conv1D and GlobalAveragePooling1D."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 3), name="signal")
    x = keras.layers.Conv1D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.Conv1D(8, 3, padding="same", activation="relu", name="block_conv1")(x)
    y = keras.layers.Conv1D(8, 3, padding="same", name="block_conv2")(y)
    y = keras.layers.BatchNormalization(name="block_bn")(y)
    y = keras.layers.Add(name="residual_add")([x, y])
    y = keras.layers.ReLU(name="block_relu")(y)
    z = keras.layers.Concatenate(name="concat")([x, y])
    z = keras.layers.MaxPooling1D(name="pool")(z)
    z = keras.layers.GlobalAveragePooling1D(name="gap")(z)
    z = keras.layers.Dense(6, activation="relu", name="head_hidden")(z)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head_out")(z)
    return keras.Model(inputs, outputs, name="small_residual")


@pytest.fixture
def sequential_model():
    return build_sequential()


@pytest.fixture
def residual_model():
    return build_residual()


@pytest.fixture
def make_sequential():
    """The builder itself, for tests that need several copies or other seeds."""
    return build_sequential


@pytest.fixture
def make_residual():
    return build_residual


@pytest.fixture
def image_batch():
    return np.random.default_rng(0).normal(size=(32, 8, 8, 2)).astype("float32")


@pytest.fixture
def signal_batch():
    return np.random.default_rng(1).normal(size=(32, 16, 3)).astype("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Layer names restart per test, so messages and `per_layer` names are predictable."""
    keras.backend.clear_session()
    yield


# The files whose module fixtures train a model or start processes, longest first (from
# `--durations` of a CI run). scripts/test.sh hands whole files to two pytest-xdist workers
# in collection order (`--dist loadfile --no-loadscope-reorder`): starting these first lets
# the many short files fill the gaps, so both workers finish at about the same time.
LONGEST_FILES_FIRST = (
    "test_keras3_backends.py",
    "test_keras3_under_tensorflow.py",
    "test_benchmark_scripts.py",
    "test_imagenet_example.py",
    "test_distribute.py",
    "test_gpu_check.py",
    "test_example.py",
    "test_resume.py",
    "test_fashion_mnist_training.py",
    "test_multiworker.py",
    "test_xla.py",
    "test_recalibrate_batch_norm.py",
    "test_staircase_fast.py",
    "test_saving.py",
    "test_schedule.py",
    "test_docs.py",
)


def pytest_collection_modifyitems(items):
    """Run LONGEST_FILES_FIRST before every other file (the others keep their order)."""
    rank = {name: position for position, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))

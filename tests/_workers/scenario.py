"""The small training run shared by the distribution and fault-tolerance workers and tests.

A W3A3 network with one BatchNormalization, deterministic data, no shuffling, and the
paper's optimizer (SGD, momentum 0.9, global gradient clipping at L2 norm 5)::

    Conv2D(4, relu)  [float, first layer]
    Conv2D(6)        [W3 pow2 {-4..4}]
    BatchNormalization                   [statistics frozen: quantize_model's default]
    ReLU             [A3 {0..7}]
    Flatten
    Dense(8, relu)   [W3, A3]
    Dense(3)         [float, last layer]

Imported by the worker scripts next to it (run as subprocesses) and by the tests.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.keras2.backend import keras, tf  # noqa: E402
from tf_qnets.tf.distribute import replica_values  # noqa: E402

SAMPLES = 64
GLOBAL_BATCH = 16
EPOCHS = 2
STEPS_PER_EPOCH = SAMPLES // GLOBAL_BATCH
TEMPERATURE_BASE = 5.0
LEARNING_RATE = 1e-3  # the paper's (with 1e-2, 1 and 2 replicas drift 1e-3 apart in 8 steps)


def make_data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(SAMPLES, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, SAMPLES).astype("int32")
    return x, y


def train_dataset(x, y):
    """Batches of GLOBAL_BATCH in a fixed order; under a strategy each replica gets a slice."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def build_float_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1), name="conv_first"),
        keras.layers.Conv2D(6, 3, use_bias=False, name="conv_q"),
        # Frozen statistics (the default) make 1 and 2 replicas compute the same function;
        # with batch statistics each replica would normalise its own half batch.
        keras.layers.BatchNormalization(name="bn_q"),
        keras.layers.ReLU(name="relu_q"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(8, activation="relu", name="dense_q"),
        keras.layers.Dense(3, name="logits"),
    ], name="scenario")


def quantize(float_model, calibration_x):
    return tf_qnets.quantize_model(float_model, w_bits=3, a_bits=3,
                                   calibration_data=calibration_x, verbose=0)


def compile_model(model, jit_compile=False):
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.9, global_clipnorm=5.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )


def quantizer_variables(model):
    """``{"quant_conv_q/kernel/alpha": variable, ...}`` for every quantizer variable."""
    found = {}
    for wrapper, _, tensor, _, variables in tf_qnets.quantizer_states(model):
        for key in ("alpha", "beta", "thresholds", "temperature"):
            found[f"{wrapper.name}/{tensor}/{key}"] = variables[key]
    return found


def trained_variables(model):
    """Every weight of the model, by position and name (names differ between builds)."""
    return {f"{index:02d}:{w.name.split('/')[-1]}": w for index, w in enumerate(model.weights)}


def optimizer_variables(model):
    """The optimizer's state (iteration count, momentum slots) by position."""
    return {f"opt{index:02d}": v for index, v in enumerate(model.optimizer.variables())}


def snapshot(variables, strategy=None):
    """``{name: [value on replica 0, value on replica 1, ...]}`` as nested lists."""
    strategy = strategy or tf.distribute.get_strategy()
    return {name: [np.asarray(v).tolist() for v in replica_values(var, strategy)]
            for name, var in variables.items()}


def write_json(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(payload, handle)
    os.replace(tmp, path)

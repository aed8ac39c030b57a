"""A short real training run on Fashion-MNIST (method.md Sec. 5, scaled down).

Train a small float CNN, quantize its weights to 3 bits ({-4,-2,-1,0,1,2,4}; first and last
layers float, as in the paper; activations float: W3A3 needs more fine-tuning epochs than a
test can afford on two CPU cores), fine-tune with a rising temperature,
and evaluate with the hard staircase: its accuracy must end within 2 points of the float
model the run started from. The data comes from tf_qnets.datasets.load_fashion_mnist; if it
is missing the test fails with the loader's message (CI installs it).

Run with ``pytest -s`` to see the accuracies.
"""

import gzip
import struct
import time

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras, tf
from tf_qnets import datasets
from tf_qnets.datasets import load_fashion_mnist, read_idx

TRAIN, TEST = 12_000, 2_000
BATCH = 64
FLOAT_EPOCHS = 3
QAT_EPOCHS = 2
MAX_DROP = 2.0  # accuracy points


# --- the loader ------------------------------------------------------------------------------

def _idx_bytes(array):
    """IDX encoding written from the format description: 0, 0, type 0x08, ndim, big-endian dims."""
    array = np.asarray(array, np.uint8)
    return (bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.tobytes())


def _write_dataset(folder, compress):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(5, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=5),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(3, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=3),
    }
    for name, array in arrays.items():
        if compress:
            with gzip.open(folder / (name + ".gz"), "wb") as handle:
                handle.write(_idx_bytes(array))
        else:
            (folder / name).write_bytes(_idx_bytes(array))
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_loader_reads_idx_files_from_data_dir(tmp_path, compress):
    arrays = _write_dataset(tmp_path, compress)
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(data_dir=tmp_path)
    np.testing.assert_array_equal(x_train, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(x_test, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    assert x_train.dtype == np.uint8 and x_train.shape == (5, 28, 28)


def test_idx_dimensions_are_big_endian(tmp_path):
    path = tmp_path / "wide"
    path.write_bytes(_idx_bytes(np.arange(2 * 300).reshape(2, 300) % 256))
    assert read_idx(path).shape == (2, 300)  # 300 = 0x012C: little-endian would read 0x2C01


def test_a_file_with_a_bad_magic_number_is_rejected(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 20)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def test_a_truncated_file_is_rejected(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(_idx_bytes(np.zeros((4, 28, 28)))[:-10])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(path)


def test_a_corrupt_gzip_file_is_rejected(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros((2, 3))))[:-8])
    with pytest.raises(ValueError, match="corrupt"):
        read_idx(path)


def test_a_missing_data_dir_raises_file_not_found_with_instructions(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(data_dir=tmp_path / "nowhere")


def test_a_data_dir_missing_a_file_names_it(tmp_path):
    _write_dataset(tmp_path, compress=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.*data_dir"):
        load_fashion_mnist(data_dir=tmp_path)


def test_without_any_source_the_loader_says_how_to_get_the_data(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_DIR", str(tmp_path / "absent"))
    monkeypatch.setattr(datasets, "_load_tfds", lambda: None)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist.*data_dir"):
        load_fashion_mnist()


def test_the_debian_location_is_used_when_present(tmp_path, monkeypatch):
    arrays = _write_dataset(tmp_path, compress=True)
    monkeypatch.setattr(datasets, "DEBIAN_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "_load_tfds", lambda: None)
    (x_train, _), _ = load_fashion_mnist()
    np.testing.assert_array_equal(x_train, arrays["train-images-idx3-ubyte"])


# --- the training run --------------------------------------------------------------------------

def _subset(seed=0):
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    rng = np.random.default_rng(seed)
    train = rng.permutation(len(x_train))[:TRAIN]
    test = rng.permutation(len(x_test))[:TEST]
    prep = lambda images: (images.astype("float32") / 255.0)[..., None]  # noqa: E731
    return (prep(x_train[train]), y_train[train].astype("int32")), (
        prep(x_test[test]), y_test[test].astype("int32"))


def _cnn():
    inputs = keras.Input((28, 28, 1))
    x = inputs
    for index, channels in enumerate((16, 32)):
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False,
                                name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{index}")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="fashion_cnn")


def _dataset(x, y, shuffle):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=0, reshuffle_each_iteration=True)
    return ds.batch(BATCH).prefetch(2)


def _accuracy(model, x, y):
    logits = model.predict(x, batch_size=500, verbose=0)
    return 100.0 * float(np.mean(np.argmax(logits, axis=1) == y))


def test_w3_hard_accuracy_ends_within_two_points_of_float():
    start = time.time()
    (x_train, y_train), (x_test, y_test) = _subset()
    keras.utils.set_random_seed(0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    model = _cnn()
    model.compile(keras.optimizers.Adam(2e-3), loss, ["accuracy"])
    model.fit(_dataset(x_train, y_train, True), epochs=FLOAT_EPOCHS, verbose=0)
    float_accuracy = _accuracy(model, x_test, y_test)
    float_time = time.time() - start

    qat = tf_qnets.quantize_model(model, w_bits=3, verbose=0)
    initial_hard = _accuracy(qat, x_test, y_test)
    qat.compile(keras.optimizers.Adam(5e-4), loss, ["accuracy"])
    qat.fit(_dataset(x_train, y_train, True), epochs=QAT_EPOCHS, verbose=0,
            callbacks=[tf_qnets.TemperatureScheduler(base=10)])
    hard_accuracy = _accuracy(qat, x_test, y_test)

    print(f"\nFashion-MNIST {TRAIN} train / {TEST} test: float {float_accuracy:.2f}% "
          f"({FLOAT_EPOCHS} epochs, {float_time:.0f}s); W3 hard after init {initial_hard:.2f}%, "
          f"after {QAT_EPOCHS} fine-tune epochs {hard_accuracy:.2f}% "
          f"(total {time.time() - start:.0f}s)")
    assert float_accuracy > 80.0
    assert hard_accuracy >= float_accuracy - MAX_DROP

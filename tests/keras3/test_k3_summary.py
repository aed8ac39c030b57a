"""tf_qnets.keras3.summary: rows and totals of Keras 3 quantized models.

Every expected number is worked out here from the layer shapes and the storage rules
(comments give the formula), not read back from the code under test.
"""

import math

import keras
import numpy as np
import pytest

from tf_qnets.keras3 import quantize_model
from tf_qnets.keras3.summary import summary

W3 = "W3 {-4,-2,-1,0,1,2,4}"
A3 = "A3 {0..7}"


def build_block_cnn():
    """Conv-BN-ReLU stem, a residual block (Add), max pooling, a 1x1 conv and two Dense layers."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_a")(x)
    y = keras.layers.BatchNormalization(name="bn_a")(y)
    y = keras.layers.ReLU(name="relu_a")(y)
    y = keras.layers.Conv2D(8, 3, padding="same", name="conv_b")(y)
    y = keras.layers.Add(name="add")([x, y])
    y = keras.layers.ReLU(name="block_relu")(y)
    y = keras.layers.MaxPooling2D(name="pool")(y)
    y = keras.layers.Conv2D(4, 1, activation="relu", name="pw")(y)
    y = keras.layers.Flatten(name="flatten")(y)
    y = keras.layers.Dense(16, activation="relu", name="fc")(y)
    outputs = keras.layers.Dense(5, name="logits")(y)
    return keras.Model(inputs, outputs, name="block_cnn")


NAMES = ["stem", "stem_bn", "stem_relu", "conv_a", "bn_a", "relu_a", "conv_b", "add",
         "block_relu", "pool", "pw", "flatten", "fc", "logits"]

# Kernel layers: (kernel elements, bias elements, MACs per sample).
KERNELS = {
    "stem": (3 * 3 * 3 * 8, 8, 8 * 8 * 8 * (3 * 3 * 3)),     # out_h*out_w*out_c * kh*kw*in_c
    "conv_a": (3 * 3 * 8 * 8, 0, 8 * 8 * 8 * (3 * 3 * 8)),
    "conv_b": (3 * 3 * 8 * 8, 8, 8 * 8 * 8 * (3 * 3 * 8)),
    "pw": (1 * 1 * 8 * 4, 4, 4 * 4 * 4 * (1 * 1 * 8)),       # after 2x2 max pooling
    "fc": (4 * 4 * 4 * 16, 16, 16 * 64),                     # out * in (Flatten: 4*4*4 = 64)
    "logits": (16 * 5, 5, 5 * 16),
}
BN_CHANNELS = {"stem_bn": 8, "bn_a": 8}


def _kernel_bytes(kernel, bias, weight_bits):
    """(int8, INT4, packed) bytes: kernel codes at 8 / 4 (3-bit levels fit [-7, 7]) / 3 bits
    for a 3-bit kernel, 8 bits under every rule for a float kernel; int32 biases."""
    if weight_bits == 3:
        codes = (kernel, kernel // 2, math.ceil(kernel * 3 / 8))
    else:
        codes = (kernel, kernel, kernel)
    return tuple(c + 4 * bias for c in codes)


def expected_rows(quantized_kernels):
    """name -> dict of the expected row fields, for 3-bit weights on ``quantized_kernels``
    and 3-bit activations after every ReLU; the model input is rounded to int8 as the
    integer file rounds it (the ``image_int8`` InputQuantizer row)."""
    # Output precision of each layer (bits): ReLU-like outputs are 3-bit; pooling and
    # flattening keep their input's precision; the rest are float (32).
    # (block_relu's staircase sits on the max pooling after it, its only reader)
    a3_outputs = {"stem_relu", "relu_a", "pool", "pw", "fc"}
    # conv_b's linear output feeds the Add: the integer file stores it in int8, and so does
    # training (an int8 output quantizer)
    int8_outputs = {"conv_b"} & set(quantized_kernels)
    inputs = {"stem": 8, "conv_a": 3, "conv_b": 3, "pw": 3, "fc": 3, "logits": 3}
    rows = {"image_int8": {"output": "int8", "weights": "-", "params": 0, "weight_bits": None,
                           "input_bits": None, "macs": 0, "mac_precision": "",
                           "kernel_params": 0, "bytes_float32": 0, "bytes_int8": 0,
                           "bytes_int4": 0, "bytes_packed": 0}}
    for name in NAMES:
        output = A3 if name in a3_outputs else "int8" if name in int8_outputs else "-"
        row = {"output": output, "weight_bits": None,
               "input_bits": None, "macs": 0, "mac_precision": "", "kernel_params": 0}
        if name in KERNELS:
            kernel, bias, macs = KERNELS[name]
            bits = 3 if name in quantized_kernels else 32
            row.update(params=kernel + bias, kernel_params=kernel, weight_bits=bits,
                       input_bits=inputs[name], macs=macs,
                       weights=W3 if bits == 3 else "float32",
                       mac_precision=("float" if bits == inputs[name] == 32
                                      else f"W{bits}/A{inputs[name]}"))
            row["bytes_int8"], row["bytes_int4"], row["bytes_packed"] = _kernel_bytes(kernel, bias, bits)
        elif name in BN_CHANNELS:
            channels = BN_CHANNELS[name]
            # stem_bn folds into stem's existing bias (0 B); bn_a into conv_a, which has no
            # bias: it adds C int32 biases.
            size = 0 if name == "stem_bn" else 4 * channels
            row.update(params=4 * channels, weights="-",
                       bytes_int8=size, bytes_int4=size, bytes_packed=size)
        else:
            row.update(params=0, weights="-", bytes_int8=0, bytes_int4=0, bytes_packed=0)
        row["bytes_float32"] = 4 * row["params"]
        rows[name] = row
    return rows


def _quantized(**options):
    keras.utils.set_random_seed(0)
    model = build_block_cnn()
    data = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    return quantize_model(model, w_bits=3, a_bits=3, calibration_data=data, verbose=0, **options)


def _check_rows(table, quantized_kernels):
    expected = expected_rows(quantized_kernels)
    assert [row.name for row in table.rows] == ["image_int8"] + NAMES
    for row in table.rows:
        got = row.as_dict()
        assert {key: got[key] for key in expected[row.name]} == expected[row.name], row.name
    return expected


def _check_totals(table, expected):
    totals = table.totals
    assert totals.params == sum(row["params"] for row in expected.values())
    assert totals.kernel_params == sum(kernel for kernel, _, _ in KERNELS.values())
    for key in ("bytes_float32", "bytes_int8", "bytes_int4", "bytes_packed"):
        assert getattr(totals, key) == sum(row[key] for row in expected.values()), key
    by_precision = {}
    for row in expected.values():
        if row["macs"]:
            by_precision[row["mac_precision"]] = by_precision.get(row["mac_precision"], 0) + row["macs"]
    assert totals.macs_by_precision == by_precision
    assert totals.macs == sum(macs for _, _, macs in KERNELS.values())
    assert totals.layers_with_unknown_macs == 0
    assert totals.compression_int4 == pytest.approx(totals.bytes_float32 / totals.bytes_int4)
    assert totals.compression_packed == pytest.approx(totals.bytes_float32 / totals.bytes_packed)


def test_w3a3_rows_and_totals():
    table = summary(_quantized(), print_fn=None)
    # first_last="float" (the paper): the stem and the logits keep float kernels.
    expected = _check_rows(table, {"conv_a", "conv_b", "pw", "fc"})
    _check_totals(table, expected)
    assert table.model_name == "block_cnn"
    assert table.totals.macs_by_precision["W32/A8"] == 8 * 8 * 8 * 27
    assert table.totals.macs_by_precision["W32/A3"] == 80


def test_first_last_low_bit_quantizes_the_stem_and_the_logits():
    table = summary(_quantized(first_last="low_bit"), print_fn=None)
    expected = _check_rows(table, {"stem", "conv_a", "conv_b", "pw", "fc", "logits"})
    _check_totals(table, expected)
    stem = table.rows[1]
    assert (stem.weights, stem.mac_precision) == (W3, "W3/A8")   # fed by the int8-rounded input
    assert (stem.bytes_int4, stem.bytes_packed) == (108 + 32, 81 + 32)


def test_an_excluded_layer_stays_float32_and_costs_8_bits_per_kernel_element():
    table = summary(_quantized(exclude=["conv_a"]), print_fn=None)
    expected = _check_rows(table, {"conv_b", "pw", "fc"})
    _check_totals(table, expected)
    conv_a = table.rows[1 + NAMES.index("conv_a")]
    assert (conv_a.weights, conv_a.mac_precision, conv_a.bytes_packed) == ("float32", "W32/A3", 576)


def test_the_float_model_is_all_float():
    keras.utils.set_random_seed(0)
    table = summary(build_block_cnn(), print_fn=None)
    kernels = [row for row in table.rows if row.kernel_params]
    assert {row.mac_precision for row in kernels} == {"float"}
    assert {row.output for row in table.rows} == {"-"}
    assert table.totals.macs_by_precision == {"float": sum(m for _, _, m in KERNELS.values())}
    # Every kernel at 8 bits, biases at 32, the folded BNs as above: the same under each rule.
    size = sum(k + 4 * b for k, b, _ in KERNELS.values()) + 4 * 8
    assert table.totals.bytes_int8 == table.totals.bytes_int4 == table.totals.bytes_packed == size


def test_printed_table_is_the_str_of_the_result(capsys):
    table = summary(_quantized())
    printed = capsys.readouterr().out
    assert printed.strip() == str(table)
    lines = printed.splitlines()
    assert lines[0] == 'Model: "block_cnn"'
    assert lines[1].split() == ["Layer", "(type)", "Weights", "Output", "Params", "int8", "B",
                                "INT4", "B", "packed", "B", "MACs", "MAC", "precision"]
    assert any(line.startswith("conv_a (Conv2D)") and W3 in line for line in lines)
    assert f"Parameters: {table.totals.params:,}" in printed


def test_sequential_model_with_depthwise_conv():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c0"),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw"),        # -> 4x4x8
        keras.layers.ReLU(name="r"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(3, name="out"),
    ], name="seq")
    data = np.random.default_rng(1).normal(size=(8, 6, 6, 2)).astype("float32")
    qat = quantize_model(model, w_bits=2, a_bits=2, calibration_data=data, verbose=0)
    rows = {row.name: row for row in summary(qat, print_fn=None).rows}
    assert rows["c0"].macs == 6 * 6 * 4 * (3 * 3 * 2) and rows["c0"].mac_precision == "W32/A8"
    assert rows["dw"].macs == 4 * 4 * 8 * (3 * 3)
    assert (rows["dw"].weights, rows["dw"].mac_precision) == ("W2 {-1,0,1}", "W2/A2")
    # 72 ternary codes: 72 B int8, 36 B INT4, 18 B packed; + 8 int32 biases.
    assert (rows["dw"].bytes_int8, rows["dw"].bytes_int4, rows["dw"].bytes_packed) == (104, 68, 50)
    # GlobalAveragePooling is not value-preserving: the Dense input counts as float.
    assert rows["out"].mac_precision == "float" and rows["out"].macs == 8 * 3


def test_rejects_what_is_not_a_built_keras3_model():
    with pytest.raises(TypeError, match="`model` must be a Keras 3 model"):
        summary("model.keras")
    with pytest.raises(ValueError, match="not built"):
        summary(keras.Sequential([keras.layers.Dense(2)]))
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(TypeError, match="`print_fn` must be a callable"):
        summary(model, print_fn="stdout")


def test_rows_equal_the_keras2_summary_of_the_same_network(backend):
    """The same float weights in tf_keras and Keras 3 give the same rows (TensorFlow backend)."""
    if backend != "tensorflow":
        pytest.skip("tf_keras needs TensorFlow")
    tf_keras = pytest.importorskip("tf_keras")
    from tf_qnets.keras2.api import quantize_model as quantize_model_k2
    from tf_qnets.keras2.summary import summary as summary_k2

    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((8, 8, 3), name="image")
    layers = tf_keras.layers
    x = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    y = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_a")(x)
    y = layers.BatchNormalization(name="bn_a")(y)
    y = layers.ReLU(name="relu_a")(y)
    y = layers.Conv2D(8, 3, padding="same", name="conv_b")(y)
    y = layers.Add(name="add")([x, y])
    y = layers.ReLU(name="block_relu")(y)
    y = layers.MaxPooling2D(name="pool")(y)
    y = layers.Conv2D(4, 1, activation="relu", name="pw")(y)
    y = layers.Flatten(name="flatten")(y)
    y = layers.Dense(16, activation="relu", name="fc")(y)
    outputs = layers.Dense(5, name="logits")(y)
    model_k2 = tf_keras.Model(inputs, outputs, name="block_cnn")
    data = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    qat_k2 = quantize_model_k2(model_k2, w_bits=3, a_bits=3, calibration_data=data, verbose=0)

    rows_k2 = summary_k2(qat_k2, print_fn=None).as_dict()["rows"]
    rows_k3 = summary(_quantized(), print_fn=None).as_dict()["rows"]
    # the input rounding: tfmot's QuantizeLayer in tf_keras, tf_qnets' InputQuantizer layer in
    # Keras 3; every other field of that row and every other row the same
    assert (rows_k2[0]["layer_type"], rows_k3[0]["layer_type"]) == ("QuantizeLayer", "InputQuantizer")
    for row in (rows_k2[0], rows_k3[0]):
        row.pop("layer_type")
    assert rows_k3 == rows_k2

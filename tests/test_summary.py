"""tf_qnets.summary: per-layer bits, bytes and MACs; totals; a pinned snapshot of the printed table.

Every expected number below is worked out by hand from the layer shapes (see the comments),
not read back from the code under test.
"""

import math

import numpy as np
import pytest

import tf_qnets
from tf_qnets.keras2.backend import keras
from tf_qnets.keras2.summary import ModelSummary, describe_levels, summary
from tf_qnets.core.levels import LevelSet

EXPECTED_SNAPSHOT = """\
Model: "snapshot_net"
Layer (type)                             Weights                Output     Params  int8 B  INT4 B  packed B   MACs  MAC precision
---------------------------------------  ---------------------  ---------  ------  ------  ------  --------  -----  -------------
image_int8 (QuantizeLayer)               -                      int8            0       0       0         0      0
conv1 (Conv2D)                           int8                   A3 {0..7}      76      88      88        88  4,608  int8
dw (DepthwiseConv2D)                     W3 {-4,-2,-1,0,1,2,4}  -              36      36      18        14  2,304  W3/A3
bn (FrozenStatisticsBatchNormalization)  -                      -              16      16      16        16      0
relu (ReLU)                              -                      -               0       0       0         0      0
pool (MaxPooling2D)                      -                      A3 {0..7}       0       0       0         0      0
pw (Conv2D)                              W2 {-1,0,1}            A3 {0..7}      40      64      48        40    512  W2/A3
flatten (Flatten)                        -                      -               0       0       0         0      0
fc (Dense)                               int8                   int8        1,290   1,320   1,320     1,320  1,280  W8/A3
---------------------------------------  ---------------------  ---------  ------  ------  ------  --------  -----  -------------
Parameters: 1,458 (1,420 in kernels)
MACs per sample: 8,704 = int8 4,608 (52.9%) + W3/A3 2,304 (26.5%) + W8/A3 1,280 (14.7%) + W2/A3 512 (5.9%)
Size:
  float32       5,832 B
  int8 storage  1,524 B   3.83x smaller than float32
  INT4 storage  1,490 B   3.91x smaller than float32
  packed        1,478 B   3.95x smaller than float32"""


def _snapshot_float_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(8, 1, activation="relu", name="pw")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(10, name="fc")(x)
    return keras.Model(inputs, outputs, name="snapshot_net")


@pytest.fixture(scope="module")
def snapshot_models():
    model = _snapshot_float_model()
    data = np.random.default_rng(0).random((16, 8, 8, 2), dtype=np.float32)
    qat = tf_qnets.quantize_model(model, w_bits=3, a_bits=3, calibration_data=data,
                                  first_last="int8", per_layer={"pw": {"w_bits": 2}}, verbose=0)
    return model, qat


@pytest.fixture(scope="module")
def snapshot(snapshot_models):
    printed = []
    table = summary(snapshot_models[1], print_fn=printed.append)
    return table, printed


# --- the printed table -------------------------------------------------------------------

def test_printed_table_matches_the_snapshot(snapshot):
    _, printed = snapshot
    assert printed == [EXPECTED_SNAPSHOT]


def test_str_of_the_returned_summary_is_the_printed_table(snapshot):
    table, printed = snapshot
    assert str(table) == printed[0]


def test_print_fn_none_prints_nothing(snapshot_models, capsys):
    table = summary(snapshot_models[1], print_fn=None)
    assert capsys.readouterr().out == ""
    assert isinstance(table, ModelSummary)


def test_default_print_fn_writes_to_stdout(snapshot_models, capsys):
    summary(snapshot_models[1])
    assert capsys.readouterr().out.strip() == EXPECTED_SNAPSHOT


# --- the rows as data --------------------------------------------------------------------

def test_rows_name_every_layer_but_the_input(snapshot):
    table, _ = snapshot
    assert [row.name for row in table.rows] == [
        "image_int8", "conv1", "dw", "bn", "relu", "pool", "pw", "flatten", "fc"]


def test_rows_give_weight_and_input_bits_of_kernel_layers(snapshot):
    rows = {row.name: row for row in snapshot[0].rows}
    # conv1: int8 kernel, the model input after its int8 rounding (image_int8); dw: 3-bit kernel fed by conv1's 3-bit output;
    # pw: ternary kernel fed by relu's 3-bit staircase, which quantize_model puts after the
    # max pooling (the same values); fc: int8 fed via Flatten.
    assert (rows["conv1"].weight_bits, rows["conv1"].input_bits) == (8, 8)
    assert (rows["dw"].weight_bits, rows["dw"].input_bits) == (3, 3)
    assert (rows["pw"].weight_bits, rows["pw"].input_bits) == (2, 3)
    assert (rows["fc"].weight_bits, rows["fc"].input_bits) == (8, 3)
    assert rows["relu"].weight_bits is None and rows["relu"].output == "-"
    assert rows["pool"].output == "A3 {0..7}"


def test_macs_follow_the_layer_shape_formulas(snapshot):
    rows = {row.name: row.macs for row in snapshot[0].rows}
    assert rows["conv1"] == 8 * 8 * 4 * (3 * 3 * 2)        # out_h*out_w*out_c * kh*kw*in_c
    assert rows["dw"] == 8 * 8 * 4 * (3 * 3)               # out_h*out_w*channels * kh*kw
    assert rows["pw"] == 4 * 4 * 8 * (1 * 1 * 4)           # after 2x2 max pooling
    assert rows["fc"] == 128 * 10                          # in * out
    assert rows["bn"] == rows["relu"] == rows["pool"] == rows["flatten"] == 0


def test_bytes_per_layer_under_the_three_storage_rules(snapshot):
    rows = {row.name: row for row in snapshot[0].rows}
    dw, pw = rows["dw"], rows["pw"]
    # dw: 36 codes of 3 bits, no bias: 36 B int8, 18 B INT4, ceil(108 / 8) = 14 B packed.
    assert (dw.bytes_int8, dw.bytes_int4, dw.bytes_packed) == (36, 18, math.ceil(36 * 3 / 8))
    # pw: 32 ternary codes + 8 int32 biases.
    assert (pw.bytes_int8, pw.bytes_int4, pw.bytes_packed) == (32 + 32, 16 + 32, 8 + 32)
    # bn folds into dw, which has no bias: it adds 4 int32 biases.
    assert rows["bn"].bytes_int8 == 4 * 4
    # fc stays 8-bit under every rule: 1280 int8 codes + 10 int32 biases.
    assert rows["fc"].bytes_packed == 1280 + 40
    assert all(row.bytes_float32 == 4 * row.params for row in rows.values())


def test_totals_sum_the_rows_and_compare_with_float32(snapshot):
    totals = snapshot[0].totals
    assert totals.params == 76 + 36 + 16 + 40 + 1290
    assert totals.kernel_params == 72 + 36 + 32 + 1280
    assert totals.bytes_float32 == 4 * 1458
    assert (totals.bytes_int8, totals.bytes_int4, totals.bytes_packed) == (1524, 1490, 1478)
    assert totals.compression_int8 == pytest.approx(5832 / 1524)
    assert totals.compression_int4 == pytest.approx(5832 / 1490)
    assert totals.macs_by_precision == {"int8": 4608, "W3/A3": 2304, "W8/A3": 1280, "W2/A3": 512}
    assert totals.macs == 8704


def test_as_dict_is_plain_data(snapshot):
    data = snapshot[0].as_dict()
    assert data["model_name"] == "snapshot_net"
    assert data["rows"][2] == {
        "name": "dw", "layer_type": "DepthwiseConv2D", "weights": "W3 {-4,-2,-1,0,1,2,4}",
        "output": "-", "params": 36, "kernel_params": 36, "weight_bits": 3, "input_bits": 3,
        "bytes_float32": 144, "bytes_int8": 36, "bytes_int4": 18, "bytes_packed": 14,
        "macs": 2304, "mac_precision": "W3/A3"}
    assert data["totals"]["macs"] == 8704


# --- float models and other layer types ---------------------------------------------------

def test_float_model_is_all_float32(snapshot_models):
    table = summary(snapshot_models[0], print_fn=None)
    kernels = [row for row in table.rows if row.kernel_params]
    assert {row.weights for row in kernels} == {"float32"}
    assert {row.mac_precision for row in kernels} == {"float"}
    assert table.totals.macs_by_precision == {"float": 8704}
    # Integer export of a float model: every kernel at 8 bits, no INT4.
    assert table.totals.bytes_int8 == table.totals.bytes_int4 == table.totals.bytes_packed == 1524


def test_grouped_conv_conv1d_and_depth_multiplier_macs():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((10, 10, 4))
    a = keras.layers.Conv2D(6, 3, groups=2, strides=2, name="grouped")(inputs)       # -> 4x4x6
    b = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dm2")(a)           # -> 2x2x12
    c = keras.layers.Reshape((4, 12))(b)
    d = keras.layers.Conv1D(5, 2, name="c1d")(c)                                     # -> 3x5
    e = keras.layers.Dense(7, name="seq_dense")(d)                                   # -> 3x7
    table = summary(keras.Model(inputs, e), print_fn=None)
    macs = {row.name: row.macs for row in table.rows}
    assert macs["grouped"] == 4 * 4 * 6 * 3 * 3 * 4 // 2
    assert macs["dm2"] == 2 * 2 * 12 * 3 * 3
    assert macs["c1d"] == 3 * 5 * 2 * 12
    assert macs["seq_dense"] == 3 * 7 * 5


def test_unknown_spatial_size_gives_unknown_macs():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    printed = []
    table = summary(keras.Model(inputs, outputs), print_fn=printed.append)
    assert table.rows[0].macs is None
    assert table.totals.layers_with_unknown_macs == 1
    assert "conv (Conv2D)" in printed[0] and "  ?  float" in printed[0]


def test_five_bit_weights_do_not_fit_int4_but_pack_to_five_bits():
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.layers.Dense(8, input_shape=(4,), name="first"),
        keras.layers.Dense(16, name="middle"),
        keras.layers.Dense(2, name="last"),
    ])
    qat = tf_qnets.quantize_model(model, w_bits=5, verbose=0)
    row = next(row for row in summary(qat, print_fn=None).rows if row.name == "middle")
    assert row.weights == "W5 {-15..15}"
    # 128 codes: int8 128 B; levels beyond [-7, 7] stay int8 in TFLite; packed 5 bits = 80 B.
    assert (row.bytes_int8, row.bytes_int4, row.bytes_packed) == (128 + 64, 128 + 64, 80 + 64)


def test_batch_norm_after_a_biased_conv_folds_for_free_and_elsewhere_costs_scale_and_offset():
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.BatchNormalization(name="bn_input")(inputs)
    x = keras.layers.Conv2D(5, 1, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn_conv")(x)
    table = summary(keras.Model(inputs, x), print_fn=None)
    rows = {row.name: row for row in table.rows}
    assert rows["bn_conv"].bytes_int8 == 0             # merged into conv's existing bias
    assert rows["bn_input"].bytes_int8 == 2 * 3        # per-channel scale and offset, 8 bits
    assert rows["bn_input"].params == 4 * 3


@pytest.mark.parametrize("levels, text", [
    ((0, 1, 2, 3, 4, 5, 6, 7), "{0..7}"),
    ((-1, 0, 1), "{-1,0,1}"),
    ((-1, 1), "{-1,1}"),
    ((-4, -2, -1, 0, 1, 2, 4), "{-4,-2,-1,0,1,2,4}"),
    ((-7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7), "{-7..7}"),
])
def test_describe_levels(levels, text):
    assert describe_levels(LevelSet(levels)) == text


# --- errors ------------------------------------------------------------------------------

def test_rejects_something_that_is_not_a_model():
    with pytest.raises(TypeError, match="`model` must be a tf_keras"):
        summary("model.keras")


def test_rejects_an_unbuilt_model():
    with pytest.raises(ValueError, match="not built"):
        summary(keras.Sequential([keras.layers.Dense(2)]))


def test_rejects_a_print_fn_that_is_not_callable(snapshot_models):
    with pytest.raises(TypeError, match="`print_fn` must be a callable"):
        summary(snapshot_models[0], print_fn="stdout")

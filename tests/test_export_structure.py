"""The export pipeline's structure: plan -> calibrate -> emit, one module per rewrite."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.keras2.backend import keras  # noqa: E402
from tf_qnets.export import emit, plan as plan_module  # noqa: E402
from tf_qnets.export.describe import describe  # noqa: E402
from tf_qnets.export.rewrites import REWRITES, discover  # noqa: E402
from tf_qnets.export.rewrites.layer_call import LayerCall  # noqa: E402
from tf_qnets.export.rewrites.pass_through import PassThrough  # noqa: E402


def small_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="c1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", name="c2", activation="relu")(x)
    x = keras.layers.Dropout(0.1, name="drop")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


@pytest.fixture(scope="module")
def qat():
    x = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1)).astype("float32")
    return tf_qnets.quantize_model(small_model(), w_bits=3, a_bits=3, calibration_data=x,
                                   first_last="int8", verbose=0), x


def test_rewrites_are_discovered_once_each_in_order():
    names = [rewrite.name for rewrite in REWRITES]
    assert len(names) == len(set(names)) >= 8
    assert [rewrite.order for rewrite in REWRITES] == sorted(r.order for r in REWRITES)
    assert names[0] == "layer call"            # the fallback claims first, others take over
    assert [r.name for r in discover()] == names


def test_every_rewrite_module_says_what_it_matches_and_emits():
    for rewrite in REWRITES:
        doc = __import__(type(rewrite).__module__, fromlist=["_"]).__doc__
        assert doc and "Matches" in doc and "Emits" in doc, type(rewrite).__module__


def test_the_plan_names_the_rewrite_of_every_layer(qat):
    model, _ = qat
    plan = plan_module.make_plan(describe(model)[0])
    claims = {name: rewrite.name for name, rewrite in plan.claims.items()}
    assert claims["quant_scale"] == "affine"     # wrapped: its int8 output range (the file's)
    assert claims["bn1"] == "batch norm fold"
    # the pooling carries r2's staircase in Keras (quantized after it); the file pools codes
    assert claims["quant_pool"] == claims["drop"] == "pass through"
    assert claims["gap"] == claims["quant_logits"] == "pooled dense"
    # c2's staircase (its own ReLU) and r1's (a ReLU after c1 and a folded BN; in Keras after
    # the max pooling, in the description back on r1): aligned
    assert claims["quant_c2"] == "aligned staircase"
    assert claims["r1"] == claims["quant_c1"] == "aligned staircase"
    assert set(claims) == {node.layer.name for node in plan.nodes}


def test_a_new_rewrite_only_needs_its_class(qat, monkeypatch):
    """A rewrite added to the list takes over the nodes it claims (here: the Dropout, emitted
    as the identity) and its emit runs while calibrating and tracing."""
    model, x = qat
    emitted = []

    class DropoutAsIdentity:
        name, order = "dropout as identity", 100

        def plan(self, plan):
            for node in plan.nodes:
                if node.layer.class_name == "Dropout":
                    plan.claim(node, self)

        def emit(self, node, values, context):
            emitted.append(context.tracing)
            return values[node.flat_input_ids[0]]

    monkeypatch.setattr("tf_qnets.export.rewrites.REWRITES", REWRITES + (DropoutAsIdentity(),))
    plan = plan_module.make_plan(describe(model)[0])
    assert plan.claims["drop"].name == "dropout as identity"
    ranges = emit.calibrate(plan, [x[:8]])
    emit.trace(plan, ranges)
    assert emitted == [False, True]


def test_a_plan_without_a_claim_for_some_node_is_a_bug(qat, monkeypatch):
    model, _ = qat
    monkeypatch.setattr("tf_qnets.export.rewrites.REWRITES", tuple(
        r for r in REWRITES if not isinstance(r, (LayerCall, PassThrough))))
    with pytest.raises(AssertionError, match="no rewrite claimed"):
        plan_module.make_plan(describe(model)[0])


def quantized_residual_block(channels, relu_convs, bits):
    """``relu_convs`` ReLU convolutions, then ReLU(Add(x, BN(linear conv "branch"(x)))), GAP
    and a Dense, quantized at W``bits``A``bits``; returns it with its calibration data."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = inputs
    for index in range(relu_convs):
        x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu",
                                name=f"c{index}")(x)
    y = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name="branch")(x)
    y = keras.layers.BatchNormalization(name="branch_bn")(y)
    x = keras.layers.ReLU(name="out")(keras.layers.Add(name="add")([x, y]))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    data = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3)).astype("float32") / 255.0
    qat = tf_qnets.quantize_model(model, w_bits=bits, a_bits=bits, calibration_data=data,
                                  first_last="int8", verbose=0)
    return qat, data


def test_the_staircase_after_a_residual_add_is_the_add_s_own_requantization(tmp_path):
    """ResNet block output: ReLU(Add(shortcut, conv-BN)) with a staircase. The ADD rounds the
    sum once, straight to the staircase codes (fused ReLU, saturating range): no RELU,
    MINIMUM or calibrated range for the sum."""
    qat, data = quantized_residual_block(4, relu_convs=1, bits=4)
    plan = plan_module.make_plan(describe(qat)[0])
    assert plan.claims["add"].name == plan.claims["quant_out"].name == "add staircase"
    report = tf_qnets.export_tflite(qat, str(tmp_path / "res.tflite"), data[:32],
                                    verify_data=data[32:])
    ops = {name for name, _, _ in report.ops}
    assert "ADD" in ops and not ops & {"RELU", "MINIMUM", "MAXIMUM"}, ops
    assert report.verification.agreement >= 0.9


def test_a_low_bit_kernel_with_an_int8_output_keeps_its_bias_to_well_under_one_output_step(
        tmp_path):
    """A linear conv-BN before a residual Add (not a staircase: nothing aligns its bias).
    Ternary codes read from a 2-bit staircase make the accumulator unit (input scale times
    weight scale) coarse; stored as 127 * code, the kernel is the same and the int32 bias is
    127 times closer to the folded one. Before, its rounding moved the int8 output by more
    than one step."""
    from tf_qnets.runtime import load_interpreter

    qat, data = quantized_residual_block(8, relu_convs=2, bits=2)
    path = str(tmp_path / "res.tflite")
    tf_qnets.export_tflite(qat, path, data[:32])
    interpreter = load_interpreter(path)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    convs = [op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"
             and "quant_branch/" in details[op["inputs"][1]]["name"]]
    assert len(convs) == 1, [details[i]["name"] for i in details]
    _, weight_index, bias_index = convs[0]["inputs"]
    codes = interpreter.get_tensor(weight_index)
    assert set(np.unique(np.abs(codes))) <= {0, 127}, np.unique(codes)
    bias = interpreter.get_tensor(bias_index) * details[bias_index]["quantization_parameters"]["scales"]
    bn = [layer for layer in qat.layers if layer.name.endswith("branch_bn")][0]
    bn = getattr(bn, "layer", bn)
    factor = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    folded = bn.beta.numpy() - bn.moving_mean.numpy() * factor
    output_step = details[convs[0]["outputs"][0]]["quantization"][0]
    assert np.max(np.abs(bias - folded)) < 0.05 * output_step, (bias, folded, output_step)


def test_inputs_on_rounding_ties_get_an_input_scale_without_ties(tmp_path):
    """8-bit pixels scaled to [-1, 1] (MobileNet preprocessing) sit halfway between the codes
    of the calibrated range's int8 grid; the file's input scale is widened until none does."""
    from tf_qnets.core.input_range import TIE_MARGIN, tie_share
    from tf_qnets.runtime import load_interpreter

    pixels = np.random.default_rng(1).integers(0, 256, (32, 8, 8, 1))
    pixels[0, 0, 0, 0], pixels[0, 0, 1, 0] = 0, 255
    x = (pixels / 127.5 - 1.0).astype("float32")
    qat = tf_qnets.quantize_model(small_model(), w_bits=3, a_bits=3, calibration_data=x,
                                  first_last="int8", verbose=0)
    assert tie_share(x, -1.0, 1.0) == 1.0               # the plain calibrated range: all ties
    ranges = emit.calibrate(plan_module.make_plan(describe(qat)[0]), [x[:16], x[16:]])
    lo, hi = ranges["__input__"]
    assert lo == -1.0 and 1.0 < hi < 1.01
    path = str(tmp_path / "ties.tflite")
    tf_qnets.export_tflite(qat, path, x, int8_io=True)
    scale, _ = load_interpreter(path).get_input_details()[0]["quantization"]
    assert abs(scale - (hi - lo) / 255) < 1e-7
    assert tie_share(x, 0.0, 255 * scale) <= 2 * TIE_MARGIN

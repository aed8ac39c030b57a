"""Integer TFLite export: stored codes, integer-only builtin ops, INT4 packing, staircases, fidelity.

Every expectation is computed independently with numpy from the quantizers' variables
(alpha, beta, thresholds) and the BatchNormalization statistics, never by the exporter.
"""

import os
import re
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.keras2.backend import keras, tf  # noqa: E402
from tf_qnets.export import export_tflite, inspect_tflite, verify_tflite  # noqa: E402
from tf_qnets.export.activations import fake_quant, lower_staircase, lower_staircase_direct  # noqa: E402
from tf_qnets.export.diagnose import staircase_flips  # noqa: E402
from tf_qnets.export.convert import convert_function  # noqa: E402
from tf_qnets.export.inspect import read_model, schema, tensor_values  # noqa: E402
from tf_qnets.core.levels import activation_levels, weight_levels  # noqa: E402
from tf_qnets.runtime import load_interpreter, predict  # noqa: E402

W3_LEVELS = (-4, -2, -1, 0, 1, 2, 4)


def tiny_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="r2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs)


def images(n, seed=0):
    """Inputs on the k/255 grid, like 8-bit images."""
    return (np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 1)) / 255.0).astype("float32")


def qat_model(thresholds, w_bits=3, a_bits=3):
    model = tiny_cnn()
    x = images(64, seed=1)
    model.compile("adam", "mse")
    model.fit(x, np.random.default_rng(2).normal(size=(64, 3)), epochs=2, verbose=0)
    # Non-trivial BN statistics (one negative gamma) so that folding is exercised.
    for bn in ("bn1", "bn2"):
        layer = model.get_layer(bn)
        gamma, beta, mean, var = layer.get_weights()
        gamma[0] = -0.7 * abs(gamma[0]) - 0.1
        layer.set_weights([gamma, beta + 0.05, mean + 0.02, var * 1.5])
    qat = tf_qnets.quantize_model(model, w_bits, a_bits, calibration_data=x, thresholds=thresholds,
                                  first_last="int8", verbose=0)
    for variable in qat.weights:  # trained-looking scales: alpha * beta != 1
        if variable.name.endswith("_alpha:0"):
            variable.assign(variable * 1.07)
    return qat


@pytest.fixture(scope="module")
def uniform_model():
    return qat_model("uniform")


@pytest.fixture(scope="module")
def kmeans_model():
    return qat_model("kmeans", w_bits=2, a_bits=2)


@pytest.fixture(scope="module")
def exported(uniform_model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("export") / "uniform.tflite")
    return export_tflite(uniform_model, path, images(64, seed=3))


# ----------------------------------------------------------------- reference maths (numpy)
def kernel_of(wrapper):
    (kernel,) = [w for w in wrapper.weights if w.name.endswith("/kernel:0")]
    return kernel.numpy()


def reference_codes(wrapper):
    """Codes of a low-bit kernel: -o + sum_i s_i [beta w > b_i], decided in float32."""
    (_, _, quantizer, variables), = [s for s in wrapper.quantizer_states() if s[0] == "weights"]
    kernel = kernel_of(wrapper).astype(np.float32)
    u = np.float32(variables["beta"].numpy()) * kernel
    levels = np.asarray(quantizer.levels.levels)
    thresholds = np.sort(variables["thresholds"].numpy())
    return levels[np.searchsorted(thresholds, u, side="left")]


def bn_sign(model, name):
    gamma = model.get_layer(name).gamma.numpy()
    return np.where(gamma < 0, -1, 1)


def stored_kernels(path):
    """{layer name: stored integer kernel (output channel first)} read from the flatbuffer."""
    data, model = read_model(path)
    tfl = schema()
    graph = model.Subgraphs(0)
    found = {}
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        name = tensor.Name().decode()
        if "pinned_kernel" in name:
            # "[staircase scope/]quant_<layer>/pinned_kernel": a layer emitted once per
            # threshold (direct lowering) has one kernel per copy, all with the same codes.
            layer = name.split(";")[-1].split("/pinned_kernel")[0].split("/")[-1]
            layer = layer.replace("quant_", "")
            found[layer] = tensor_values(model, tfl, data, tensor)
    return found


def numpy_staircase(x, alpha, beta, thresholds, levels):
    steps = np.diff(np.asarray(levels))
    u = np.float32(beta) * x.astype(np.float32)
    total = np.full(x.shape, float(levels[0]))
    for b_i, s_i in zip(thresholds, steps):
        total += s_i * (u > np.float32(b_i))
    return alpha * total


# ----------------------------------------------------------------- requirement 2: exact codes
def test_stored_codes_are_exactly_the_trained_levels_with_bn_folded(uniform_model, exported):
    kernels = stored_kernels(exported.path)
    for layer, bn in (("c2", "bn2"), ("c3", None)):
        wrapper = uniform_model.get_layer(f"quant_{layer}")
        expected = reference_codes(wrapper)                       # (h, w, in, out)
        if bn is not None:
            expected = expected * bn_sign(uniform_model, bn)      # folded BN flips the sign
        stored = kernels[layer]                                   # (out, h, w, in)
        # int8 storage: the levels themselves, or k * level (k = 127 // 4) where the finer
        # weight scale lets the staircase after the layer be aligned exactly
        factor = int(np.gcd.reduce(np.abs(stored).ravel().astype(np.int64)))
        assert factor in (1, 127 // 4)
        np.testing.assert_array_equal(stored, factor * np.moveaxis(expected, -1, 0))
        assert set(np.unique(stored // factor)) <= set(W3_LEVELS)


def test_every_low_bit_weight_tensor_holds_only_levels(exported, uniform_model, tmp_path):
    low_bit = [w for w in exported.inspection.weights if "c2" in w.name or "c3" in w.name]
    assert len(low_bit) == 2 and {w.dtype for w in low_bit} == {"INT8"}
    packed = export_tflite(uniform_model, str(tmp_path / "int4.tflite"), images(32),
                           int4_weights="auto")
    int4 = [w for w in packed.inspection.weights if w.dtype == "INT4"]
    assert len(int4) == 2
    for weight in low_bit + int4:
        assert set(weight.levels) <= set(W3_LEVELS)
        assert len(weight.codes) >= 5


def test_int8_first_and_last_layers_keep_keras_int8_codes(uniform_model, exported):
    """The first conv stores the codes of its trained tfmot FakeQuant (scaled by the folded BN)."""
    wrapper = uniform_model.get_layer("quant_c1")
    (_, _, _, variables), = [s for s in wrapper.quantizer_states() if s[0] == "weights"]
    kernel = kernel_of(wrapper)
    bound = np.maximum(np.abs(variables["min_var"].numpy()), variables["max_var"].numpy())
    expected = np.round(kernel / (bound / 127.0)) * bn_sign(uniform_model, "bn1")
    stored = stored_kernels(exported.path)["c1"]
    assert np.max(np.abs(stored - np.moveaxis(expected, -1, 0))) <= 1


# ----------------------------------------------------------------- requirement 1: integer builtins
def _op_tensor_types(path):
    data, model = read_model(path)
    tfl = schema()
    names = {v: k for k, v in vars(tfl.TensorType).items() if not k.startswith("_")}
    ops = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
    graph = model.Subgraphs(0)
    result = []
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = ops[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        indices = [op.Inputs(i) for i in range(op.InputsLength())] + [
            op.Outputs(i) for i in range(op.OutputsLength())]
        result.append((name, {names[graph.Tensors(i).Type()] for i in indices if i >= 0}))
    return result


@pytest.mark.parametrize("fixture", ["uniform_model", "kmeans_model"])
def test_only_builtin_integer_ops_with_float_at_the_edges(fixture, request, tmp_path):
    path = str(tmp_path / "m.tflite")
    export_tflite(request.getfixturevalue(fixture), path, images(32))
    ops = _op_tensor_types(path)
    assert ops[0][0] == "QUANTIZE" and ops[-1][0] == "DEQUANTIZE"
    for name, types in ops[1:-1]:
        assert name not in ("CUSTOM", "FLEX", "GREATER", "CAST"), name
        assert types <= {"INT8", "INT4", "INT32"}, (name, types)
    assert all(name != "CUSTOM" for name, _ in ops)


def test_kmeans_thresholds_lower_to_per_threshold_layer_copies(kmeans_model, tmp_path):
    report = export_tflite(kmeans_model, str(tmp_path / "k.tflite"), images(32))
    counts = {name: count for name, _, count in report.ops}
    assert {"MINIMUM", "ADD"} <= set(counts)
    assert not set(counts) & {"GREATER", "CAST", "LESS"}
    # Three A2 thresholds: c1, c2, c3 each emitted once per threshold, plus the last layer.
    assert counts["CONV_2D"] == 3 * 3 + 1


def test_int8_io_has_no_float_tensor(uniform_model, tmp_path):
    path = str(tmp_path / "io.tflite")
    report = export_tflite(uniform_model, path, images(32), int8_io=True)
    assert "FLOAT32" not in report.tensor_dtypes
    assert report.inspection.inputs[0][1] == "INT8" and report.inspection.outputs[0][1] == "INT8"
    # The runtime helper quantizes the input and dequantizes the output.
    x = images(16, seed=5)
    keras_out = uniform_model(x, training=False).numpy()
    tflite_out = predict(load_interpreter(path), x)
    assert np.mean(keras_out.argmax(1) == tflite_out.argmax(1)) >= 0.9


# ----------------------------------------------------------------- requirement 4: INT4 storage
def test_int4_packing_shrinks_the_file(uniform_model, tmp_path):
    int8 = export_tflite(uniform_model, str(tmp_path / "a.tflite"), images(32), int4_weights=False)
    int4 = export_tflite(uniform_model, str(tmp_path / "b.tflite"), images(32), int4_weights="auto")
    assert {w.dtype for w in int8.inspection.weights} == {"INT8"}
    assert [w.dtype for w in int4.inspection.weights].count("INT4") == 2
    # Each packed tensor (c2: 6*3*3*4 = 216 codes, c3: 324) stores two codes per byte; the
    # file's total depends on the converter's alignment, so the buffers are compared.
    for packed, unpacked in zip(int4.inspection.weights, int8.inspection.weights):
        count = int(np.prod(packed.shape))
        assert unpacked.stored_bytes == count
        assert packed.stored_bytes == (count + 1) // 2 if packed.dtype == "INT4" else count
    assert int4.size_bytes < int8.size_bytes
    assert int4.size_ratio == pytest.approx(int4.size_bytes / int4.float_size_bytes)
    assert "ratio" in str(int4) and "INT4" in str(int4)


def test_int4_weights_true_rejects_levels_beyond_seven(tmp_path):
    qat = qat_model("uniform", w_bits=5, a_bits=3)
    with pytest.raises(ValueError, match="int4_weights"):
        export_tflite(qat, str(tmp_path / "x.tflite"), images(16), int4_weights=True)


# ----------------------------------------------------------------- requirement 3: staircases
def _write(data):
    path = os.path.join(tempfile.mkdtemp(), "staircase.tflite")
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def _convert_staircase(alpha, beta, thresholds, levels, low, high):
    function = tf.function(
        lambda x: lower_staircase(
            tf.quantization.fake_quant_with_min_max_args(x, low, high), alpha, beta, thresholds,
            levels),
        input_signature=[tf.TensorSpec([None, 64], tf.float32)], autograph=False)
    return convert_function(function.get_concrete_function())


@pytest.mark.parametrize("alpha, beta", [(0.37, 2.9), (0.5, 2.0)])   # alpha * beta == 1 too
def test_uniform_staircase_is_exact_in_tflite(alpha, beta):
    levels = activation_levels(3)
    data = _convert_staircase(alpha, beta, levels.uniform_thresholds(), levels, -1.0, 4.0)
    # one MUL with a fused ReLU (saturation clips the top level): no MINIMUM, no separate RELU
    ops = {name for name, _, _ in inspect_tflite(_write(data)).ops}
    assert "MUL" in ops and not ops & {"MINIMUM", "MAXIMUM", "RELU"}, ops
    # Inputs on the input's int8 grid, so that the input quantization itself is exact.
    x = (-1.0 + np.random.default_rng(0).integers(0, 256, (32, 64)) * (5.0 / 255)).astype("float32")
    y = predict(load_interpreter(data), x)
    reference = numpy_staircase(x, alpha, beta, levels.uniform_thresholds(), levels.levels)
    assert np.max(np.abs(y - reference)) < 1e-3 * alpha
    assert set(np.round(y / alpha).astype(int).ravel()) <= set(levels.levels)


def test_nonuniform_staircase_matches_away_from_thresholds():
    levels = activation_levels(2)
    alpha, beta = 0.8, 1.3
    thresholds = np.array([0.3, 1.1, 2.6])
    data = _convert_staircase(alpha, beta, thresholds, levels, 0.0, 3.0)
    x = (np.random.default_rng(1).integers(0, 256, (64, 64)) * (3.0 / 255)).astype("float32")
    y = predict(load_interpreter(data), x)
    reference = numpy_staircase(x, alpha, beta, thresholds, levels.levels)
    # Output values are levels; decisions may differ only within one grid step of a threshold.
    assert set(np.round(y / alpha).astype(int).ravel()) <= set(levels.levels)
    grid_step = (thresholds[-1] / beta) / 254.0
    near = np.min(np.abs(x[..., None] - thresholds / beta), axis=-1) < 2 * grid_step
    np.testing.assert_allclose(y[~near], reference[~near], atol=1e-3 * alpha)
    assert np.mean(np.abs(y - reference) > 1e-3) < 0.02


def test_direct_staircase_with_signed_levels_keeps_partial_sums_in_range():
    levels = weight_levels(3)  # -4..4 in powers of two: offset 4, steps 2, 1, 1, 1, 1, 2
    alpha, beta = 0.3, 1.7
    thresholds = np.array([-3.1, -1.4, -0.6, 0.45, 1.5, 2.9])
    step = 8.0 / 255

    def staircase(x):
        x = fake_quant(x, -4.0, 4.0)  # the input on its own int8 grid, step 8/255

        def shifted(t, gain):  # one step or more exactly when x > t (x and t on the grid)
            return gain * (x - np.float32(t - step / 2))

        return lower_staircase_direct(shifted, False, alpha, beta, thresholds, levels, step=step)

    function = tf.function(staircase, input_signature=[tf.TensorSpec([None, 64], tf.float32)],
                           autograph=False)
    data = convert_function(function.get_concrete_function())
    x = (-4.0 + np.random.default_rng(3).integers(0, 256, (32, 64)) * step).astype("float32")
    y = predict(load_interpreter(data, kernels="reference"), x)
    reference = numpy_staircase(x, alpha, beta, thresholds, levels.levels)
    near = np.min(np.abs(x[..., None] - thresholds / beta), axis=-1) < step
    np.testing.assert_allclose(y[~near], reference[~near], atol=1e-3 * alpha)
    assert np.round(y / alpha).min() == -4 and np.round(y / alpha).max() == 4


@pytest.mark.parametrize("fixture", ["uniform_model", "kmeans_model"])
def test_activation_codes_in_tflite_equal_the_keras_codes(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    path = str(tmp_path / "codes.tflite")
    export_tflite(model, path, images(32))
    rows = staircase_flips(model, path, images(64, seed=5))
    # r2's staircase sits on the max pooling after it (quantize_model quantizes after the
    # pooling; the file computes it at r2 and pools the codes)
    assert [row.layer for row in rows] == ["quant_r1", "quant_pool", "quant_c3"]
    assert all(row.codes > 0 for row in rows)
    # k-means thresholds: per-threshold copies; uniform ones: aligned requantization
    # (tf_qnets.core.alignment), or copies where no alignment exists (the first layer).
    assert all(row.flipped == 0.0 for row in rows), rows


def test_uniform_staircases_after_a_staircase_take_one_kernel_layer(uniform_model, tmp_path):
    """c2 and c3 read 3-bit codes (lattice 36 units): aligned, one CONV_2D each; c1 reads the
    float input (lattice 1): one copy per threshold."""
    report = export_tflite(uniform_model, str(tmp_path / "a.tflite"), images(32))
    counts = {name: count for name, _, count in report.ops}
    assert counts["CONV_2D"] == 7 + 1 + 1 + 1  # c1 copies, c2, c3, the logits


def test_exact_uniform_gives_keras_codes_everywhere(uniform_model, tmp_path):
    path = str(tmp_path / "exact.tflite")
    report = export_tflite(uniform_model, path, images(32), exact_uniform=True)
    rows = staircase_flips(uniform_model, path, images(64, seed=5))
    assert all(row.flipped == 0.0 for row in rows), rows
    counts = {name: count for name, _, count in report.ops}
    assert counts["CONV_2D"] == 3 * 7 + 1  # seven A3 thresholds per layer, plus the last layer
    with pytest.raises(TypeError, match="exact_uniform"):
        export_tflite(uniform_model, path, images(32), exact_uniform="yes")


def test_pooled_dense_logits_match_keras_within_one_output_step(kmeans_model, tmp_path):
    """GlobalAveragePooling + Dense is one convolution: no int8 rounding of the mean, so with
    exact activation codes the logits differ from Keras by at most one output step."""
    path = str(tmp_path / "logits.tflite")
    export_tflite(kmeans_model, path, images(32))
    x = images(64, seed=6)
    keras_out = kmeans_model(x, training=False).numpy()
    interpreter = load_interpreter(path, kernels="reference")
    tflite_out = predict(interpreter, x)
    scale = interpreter.get_output_details()[0]["quantization"][0] or next(
        d["quantization"][0] for d in interpreter.get_tensor_details()
        if d["name"].startswith("BiasAdd") and d["quantization"][0])
    assert np.max(np.abs(keras_out - tflite_out)) <= 1.01 * scale
    assert "MEAN" not in {name for name, _, _ in inspect_tflite(path).ops}


def test_flip_diagnosis_sees_a_changed_threshold(kmeans_model, tmp_path):
    path = str(tmp_path / "codes.tflite")
    export_tflite(kmeans_model, path, images(32))
    # r2's staircase: on the max pooling after it (quantize_model quantizes after the pooling)
    variable = next(v for v in kmeans_model.weights if "pool" in v.name and "thresholds" in v.name)
    saved = variable.numpy()
    try:
        variable.assign(saved + 0.3)
        rows = {row.layer: row for row in staircase_flips(kmeans_model, path, images(64, seed=5))}
    finally:
        variable.assign(saved)
    assert rows["quant_r1"].flipped == 0.0
    assert rows["quant_pool"].flipped > 0.0


# ----------------------------------------------------------------- requirement 5: verification
def test_verify_reports_agreement_accuracies_and_logit_difference(uniform_model, exported):
    x = images(48, seed=7)
    y = np.random.default_rng(8).integers(0, 3, 48)
    report = verify_tflite(uniform_model, exported.path, (x, y))
    keras_out = uniform_model(x, training=False).numpy()
    tflite_out = predict(load_interpreter(exported.path), x)
    assert report.samples == 48
    assert report.agreement == pytest.approx(np.mean(keras_out.argmax(1) == tflite_out.argmax(1)))
    assert report.keras_accuracy == pytest.approx(np.mean(keras_out.argmax(1) == y))
    assert report.tflite_accuracy == pytest.approx(np.mean(tflite_out.argmax(1) == y))
    assert report.max_abs_diff == pytest.approx(np.max(np.abs(keras_out - tflite_out)), rel=1e-5)
    assert report.agreement >= 0.9
    # Logits differ by a few output quantization steps at most.
    assert report.max_abs_diff < 0.1 * np.max(np.abs(keras_out))


def test_verify_with_both_kernel_sets(uniform_model, exported):
    x = images(32, seed=9)
    report = verify_tflite(uniform_model, exported.path, x, kernels="both")
    keras_top = uniform_model(x, training=False).numpy().argmax(1)
    reference_top = predict(load_interpreter(exported.path, kernels="reference"), x).argmax(1)
    default_top = predict(load_interpreter(exported.path), x).argmax(1)
    assert report.kernels == "default" and report.reference.kernels == "reference"
    assert report.reference.agreement == pytest.approx(np.mean(keras_top == reference_top))
    assert report.kernels_agreement == pytest.approx(np.mean(default_top == reference_top))
    assert "reference kernels" in str(report)
    assert "default vs reference kernels" in str(report)
    assert verify_tflite(uniform_model, exported.path, x).kernels_agreement is None
    with pytest.raises(ValueError, match="kernels"):
        verify_tflite(uniform_model, exported.path, x, kernels="xnnpack")


def test_verify_without_labels_gives_agreement_only(uniform_model, exported):
    report = verify_tflite(uniform_model, exported.path, images(16))
    assert report.keras_accuracy is None and report.tflite_accuracy is None
    assert "agreement" in str(report)


def test_export_report_lists_ops_dtypes_size_and_verification(uniform_model, tmp_path):
    x = images(32)
    report = export_tflite(uniform_model, str(tmp_path / "r.tflite"), x,
                           verify_data=(x, np.zeros(32, int)))
    text = str(report)
    assert str(os.path.getsize(report.path)) in text
    assert report.size_bytes == os.path.getsize(report.path)
    assert "CONV_2D" in text and "INT8" in text and "agreement" in text
    assert report.verification.samples == 32


def test_inspect_lists_ops_dtypes_and_codes(exported):
    report = inspect_tflite(exported.path)
    assert report.size_bytes == os.path.getsize(exported.path)
    assert {name for name, _, _ in report.ops} >= {"QUANTIZE", "CONV_2D", "DEQUANTIZE"}
    assert "INT4" not in report.tensor_dtypes       # int8 storage by default
    text = str(report)
    # low-bit kernels: their levels, times the factor they are stored with in int8
    assert re.search(r"(\d+ x )?\[-4, -2, -1, 0, 1, 2, 4\]", text), text



def test_report_says_how_each_staircase_was_lowered(uniform_model, kmeans_model, tmp_path):
    report = export_tflite(uniform_model, str(tmp_path / "u.tflite"), images(32))
    # r2's staircase is quantize_model's after the max pooling; the file computes it at r2
    assert report.staircases == {"aligned": ["r2", "quant_c3"], "copies": ["quant_r1"],
                                 "partial": [], "sum": [], "table": [], "rounded": []}
    assert re.search(r"2 aligned \(exact, one layer; [\d.]+% of their channels exact in the "
                     r"reference kernels too\), 1 per-threshold copies \(exact\)", str(report))
    assert report.reference_exact > 0.9
    report = export_tflite(kmeans_model, str(tmp_path / "k.tflite"), images(32))
    assert report.staircases["copies"] == ["quant_r1", "r2", "quant_c3"]


def _depthwise_model():
    """MobileNet-style: conv, BN, ReLU6; depthwise (multiplier 2), BN, ReLU; pointwise, BN, ReLU."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(6.0, name="r1")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, depth_multiplier=2,
                                     name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="r2")(x)
    x = keras.layers.Conv2D(6, 1, use_bias=False, name="pw")(x)
    x = keras.layers.BatchNormalization(name="bn3")(x)
    x = keras.layers.ReLU(name="r3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    rng = np.random.default_rng(1)
    for name in ("bn1", "bn2", "bn3"):  # per-channel BN factors of both signs
        layer = model.get_layer(name)
        gamma, beta, mean, var = layer.get_weights()
        gamma = gamma * rng.uniform(0.5, 2.0, gamma.shape) * np.sign(rng.normal(size=gamma.shape))
        layer.set_weights([gamma, beta + 0.1, mean + 0.05, var * 2.0])
    return model


def test_depthwise_conv_with_bn_exports_exactly(tmp_path):
    x = (np.random.default_rng(0).integers(0, 256, (48, 10, 10, 3)) / 255.0).astype("float32")
    qat = tf_qnets.quantize_model(_depthwise_model(), w_bits=4, a_bits=3, calibration_data=x,
                                  first_last="int8", verbose=0)
    path = str(tmp_path / "dw.tflite")
    report = export_tflite(qat, path, x[:16], int4_weights=False)
    counts = {name: count for name, _, count in report.ops}
    assert counts["DEPTHWISE_CONV_2D"] == 1
    # BN folded into the depthwise kernel (int8, one scale per output channel): aligned
    assert report.staircases["aligned"] == ["quant_r2", "quant_r3"]
    assert report.staircases["copies"] == ["quant_r1"]   # reads the model input
    rows = staircase_flips(qat, path, x[:16])
    assert all(row.flipped == 0.0 for row in rows), rows



def test_four_bit_activations_keep_int4_weights_and_say_which_staircases_are_partial(tmp_path):
    # With int4_weights="auto", INT4 pointwise codes (a lattice of one unit: the 4-bit input
    # codes are the levels) leave channels without an alignment; they keep the rounded bias
    # and the report says so. int8 storage (the default) aligns every channel. The first
    # layer is not copied 15 times.
    x = (np.random.default_rng(0).integers(0, 256, (48, 10, 10, 3)) / 255.0).astype("float32")
    qat = tf_qnets.quantize_model(_depthwise_model(), w_bits=4, a_bits=4, calibration_data=x,
                                  first_last="int8", verbose=0)
    report = export_tflite(qat, str(tmp_path / "dw4.tflite"), x[:16], int4_weights="auto")
    assert report.staircases["aligned"] == ["quant_r2"]      # the int8 depthwise kernel
    assert report.staircases["copies"] == []
    assert "quant_r3" in report.staircases["partial"] + report.staircases["rounded"]
    assert any(w.dtype == "INT4" for w in report.inspection.weights)
    assert "1 aligned" in str(report)
    report = export_tflite(qat, str(tmp_path / "dw4_int8.tflite"), x[:16])
    assert report.staircases["aligned"][-2:] == ["quant_r2", "quant_r3"]
    assert not any(w.dtype == "INT4" for w in report.inspection.weights)


def test_a_keepdims_pooling_into_a_1x1_conv_classifier_is_one_convolution(tmp_path):
    """MobileNet's head: GlobalAveragePooling2D(keepdims=True) -> Dropout -> 1x1 Conv2D ->
    Reshape. Lowered like the pooled Dense: the mean is never rounded to int8, and the
    logits stay within one output step of Keras."""
    from tf_qnets.export.describe import describe
    from tf_qnets.export.plan import make_plan

    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(6.0, name="r1")(x)
    x = keras.layers.Conv2D(16, 1, use_bias=False, name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(6.0, name="r2")(x)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    x = keras.layers.Conv2D(5, 1, name="preds")(x)
    outputs = keras.layers.Reshape((5,), name="flat")(x)
    data = np.random.default_rng(0).uniform(0, 1, (64, 8, 8, 3)).astype(np.float32)
    qat = tf_qnets.quantize_model(keras.Model(inputs, outputs), w_bits=3, a_bits=3,
                                  calibration_data=data, first_last="int8", verbose=0)
    claims = {name: rewrite.name for name, rewrite in make_plan(describe(qat)[0]).claims.items()}
    assert claims["gap"] == claims["drop"] == claims["quant_preds"] == "pooled dense"
    path = str(tmp_path / "head.tflite")
    export_tflite(qat, path, data)
    assert "MEAN" not in {name for name, _, _ in inspect_tflite(path).ops}
    interpreter = load_interpreter(path, kernels="reference")
    keras_out = qat(data, training=False).numpy()
    tflite_out = predict(interpreter, data)
    dequantize = [op for op in interpreter._get_ops_details()  # noqa: SLF001
                  if op["op_name"] == "DEQUANTIZE"][-1]
    scale = interpreter._get_tensor_details(dequantize["inputs"][0], 0)["quantization"][0]  # noqa: SLF001
    assert scale > 0 and np.max(np.abs(keras_out - tflite_out)) <= 1.01 * scale

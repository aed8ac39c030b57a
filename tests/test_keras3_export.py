"""Keras 3 models export through the same lowering as Keras 2 models (issue 18, requirement 1).

* Under JAX: a residual CNN (Conv - BN - ReLU, a residual Add, a Concatenate, a depthwise
  layer, squeeze-and-excitation with ``relu6(x + 3) * (1 / 6)`` written as ``keras.ops`` calls,
  GAP + Dense) quantized at W3A3 with int8 first/last layers, fine-tuned with an
  XLA-compiled ``fit``, exported with INT4 weights in the same process (tf_qnets loads its
  TensorFlow parts only when ``export_tflite`` is called); the file agrees with the hard Keras model on >= 99% of
  the inputs, holds INT4 tensors and only builtin integer ops. The trained values go to the
  parent process (Keras 2), which builds the same network with tf_keras, loads them and
  exports it: the two files have the same ops, the same stored weight codes and the same size.
* Under TensorFlow: the JAX-trained model, saved as a ``.keras`` file, loaded and exported
  through ``tf-qnets export``: the same bytes as the JAX process's file.
"""

import json
import sys
import textwrap

import numpy as np
import pytest

import tf_qnets
from keras3_subprocess import run_keras3
from tf_qnets.keras2.backend import keras as keras2

BUILD = textwrap.dedent("""
    def build(keras):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((12, 12, 1), name="image")
        x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
        x = keras.layers.BatchNormalization(name="stem_bn")(x)
        x = keras.layers.ReLU(name="stem_relu")(x)
        y = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="block_conv")(x)
        y = keras.layers.BatchNormalization(name="block_bn")(y)
        y = keras.layers.ReLU(name="block_relu")(keras.layers.Add(name="block_add")([x, y]))
        z = keras.layers.Concatenate(name="concat")([x, y])
        z = keras.layers.MaxPooling2D(name="pool")(z)
        z = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(z)
        z = keras.layers.BatchNormalization(name="dw_bn")(z)
        z = keras.layers.ReLU(name="dw_relu")(z)
        z = keras.layers.Conv2D(12, 1, activation="relu", name="expand")(z)
        # squeeze-and-excitation with MobileNetV3's hard sigmoid, written with operators
        s = keras.layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(z)
        s = keras.layers.Conv2D(12, 1, name="se_conv")(s)
        s = keras.layers.ReLU(6.0, name="se_relu6")(s + 3.0) * (1.0 / 6.0)
        z = keras.layers.Multiply(name="se_scale")([z, s])
        z = keras.layers.GlobalAveragePooling2D(name="gap")(z)
        return keras.Model(inputs, keras.layers.Dense(4, name="logits")(z))


    def data():
        # 8-bit images of noise plus a pattern, the label: horizontal stripes, vertical
        # stripes, a checkerboard or none
        rng = np.random.default_rng(0)
        y = rng.integers(0, 4, 384).astype("int32")
        rows, cols = np.mgrid[:12, :12]
        patterns = np.stack([rows % 2, cols % 2, (rows + cols) % 2, 0 * rows])[..., None]
        codes = rng.integers(0, 128, (384, 12, 12, 1)) + 127 * patterns[y]
        return codes.astype("float32") / 255.0, y
""")

TRAIN_AND_EXPORT = BUILD + textwrap.dedent("""
    import json, os, sys
    import keras
    import numpy as np
    import tf_qnets

    backend = keras.backend.backend()
    folder = os.environ["QNETS_EXCHANGE"]
    x, y = data()
    model = build(keras)     # a briefly trained float model, as a user starts from
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    qat = tf_qnets.quantize_model(model, 3, 3, calibration_data=x[:128],
                                  first_last="int8", verbose=0)
    qat.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    qat.fit(x, y, epochs=2, batch_size=64, verbose=0,
            callbacks=[tf_qnets.TemperatureScheduler()])
    # tf_qnets loads nothing of TensorFlow's before export (Keras itself may import it for
    # its data adapters when it is installed; tests/test_keras3_backends.py trains with
    # TensorFlow blocked)
    assert not [m for m in sys.modules if m.startswith(("tf_qnets.export", "tf_qnets.keras2",
                                                         "tf_qnets.tf"))]
    path = os.path.join(folder, "keras3.tflite")
    report = tf_qnets.export_tflite(qat, path, x[:64], int4_weights="auto", verify_data=(x, y))
    print(report)
    result = {"agreement": report.verification.agreement, "size": report.size_bytes,
              "int4": sum(w.dtype == "INT4" for w in report.inspection.weights),
              "keras_accuracy": report.verification.keras_accuracy,
              "tflite_accuracy": report.verification.tflite_accuracy}
    # the trained values, for the Keras 2 twin in the parent process
    from tf_qnets.keras3.describe_network import describe_network
    values = {}
    for node in describe_network(qat).nodes:
        layer = node.layer
        for name, value in layer.weights.items():
            values[f"{layer.name}|w|{name}"] = value
        for role, q in (("weights", layer.weight_quantizer), ("output", layer.output_quantizer)):
            if q is None:
                continue
            for field in ("alpha", "beta", "thresholds", "lo", "hi"):
                if hasattr(q, field):
                    values[f"{layer.name}|{role}|{field}"] = np.asarray(getattr(q, field))
    np.savez(os.path.join(folder, "values.npz"), **values)
    np.save(os.path.join(folder, "hard.npy"), np.asarray(qat(x, training=False)))
    # the saved model, for the command-line export under the TensorFlow backend
    qat.save(os.path.join(folder, "qat.keras"))
    np.save(os.path.join(folder, "representative.npy"), x[:64])
    np.savez(os.path.join(folder, "verify.npz"), x=x, y=y)
    with open(os.path.join(folder, "result.json"), "w") as handle:
        json.dump(result, handle)
    print("keras 3 export ok", backend, result)
""")


EXPORT_FROM_FILE = textwrap.dedent("""
    import os
    import keras
    import numpy as np
    import tf_qnets
    from tf_qnets import cli

    assert keras.backend.backend() == "tensorflow"
    folder = os.environ["QNETS_EXCHANGE"]
    path = os.path.join(folder, "from_file.tflite")
    cli.main(["export", os.path.join(folder, "qat.keras"), "-o", path,
              "--representative", os.path.join(folder, "representative.npy"),
              "--int4-weights", "auto", "--verify", os.path.join(folder, "verify.npz")])
    loaded = tf_qnets.load_model(os.path.join(folder, "qat.keras"))
    data = np.load(os.path.join(folder, "verify.npz"))
    report = tf_qnets.verify_tflite(loaded, path, (data["x"], data["y"]))
    assert report.agreement >= 0.99, report
    with open(path, "rb") as mine, open(os.path.join(folder, "keras3.tflite"), "rb") as jax_file:
        assert mine.read() == jax_file.read(), "the file differs from the JAX process's export"
    print("export from file ok", report)
""")


def _keras2_twin(values):
    """The network of BUILD in tf_keras, quantized the same way, with the Keras 3 values."""
    namespace = {"np": np}
    exec(BUILD, namespace)  # noqa: S102 - the test's own builder, shared with the subprocess
    x, _ = namespace["data"]()
    qat = tf_qnets.quantize_model(namespace["build"](keras2), 3, 3, calibration_data=x[:128],
                                  first_last="int8", verbose=0)
    from tf_qnets.keras2 import tfmot
    from tf_qnets.keras2.wrapper import QNetsWrapper

    loaded = 0
    for layer in qat.layers:
        inner = layer.layer if isinstance(layer, QNetsWrapper) else layer
        name = inner.name    # Keras 2 wrappers are called quant_<name>, Keras 3 ones <name>
        for variable in inner.weights:
            short = variable.name.split("/")[-1].split(":")[0]
            short = "kernel" if short == "depthwise_kernel" else short
            key = f"{name}|w|{short}"
            if key in values:
                variable.assign(values[key])
                loaded += 1
        if isinstance(layer, QNetsWrapper):
            for weight, _, _ in tfmot.weight_quantizer_variables(layer):
                weight.assign(values[f"{name}|w|kernel"])
            for role, _, _, variables in layer.quantizer_states():
                for variable_name, variable in variables.items():
                    field = {"min_var": "lo", "max_var": "hi"}.get(variable_name, variable_name)
                    key = f"{name}|{role}|{field}"
                    if key in values:
                        variable.assign(np.broadcast_to(values[key], variable.shape))
                        loaded += 1
    return qat, x, loaded


def test_a_jax_trained_keras3_model_exports_like_its_keras2_twin(tmp_path):
    pytest.importorskip("jax")
    output = run_keras3([sys.executable, "-c", TRAIN_AND_EXPORT], "jax",
                        {"QNETS_EXCHANGE": str(tmp_path)})
    assert "keras 3 export ok jax" in output, output
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["agreement"] >= 0.99, result
    assert abs(result["tflite_accuracy"] - result["keras_accuracy"]) <= 0.01, result
    assert result["int4"] >= 2, result

    # the saved file, loaded under the TensorFlow backend and exported by the command line:
    # byte for byte the file the JAX process wrote
    output = run_keras3([sys.executable, "-c", EXPORT_FROM_FILE], "tensorflow",
                        {"QNETS_EXCHANGE": str(tmp_path)})
    assert "export from file ok" in output, output

    values = dict(np.load(tmp_path / "values.npz"))
    twin, x, loaded = _keras2_twin(values)
    assert loaded >= 20, loaded
    hard = np.load(tmp_path / "hard.npy")
    twin_hard = twin.predict(x, verbose=0)
    assert np.mean(twin_hard.argmax(-1) == hard.argmax(-1)) >= 0.99   # the same trained network
    report = tf_qnets.export_tflite(twin, str(tmp_path / "keras2.tflite"), x[:64],
                                    int4_weights="auto", verify_data=x)
    from tf_qnets.runtime import load_interpreter, predict

    outputs = [predict(load_interpreter(str(tmp_path / name)), x)
               for name in ("keras3.tflite", "keras2.tflite")]
    np.testing.assert_array_equal(outputs[0], outputs[1])    # the same integer network
    keras3_file = tf_qnets.inspect_tflite(str(tmp_path / "keras3.tflite"))
    assert keras3_file.ops == report.inspection.ops
    assert [(w.dtype, w.shape) for w in keras3_file.weights] == [
        (w.dtype, w.shape) for w in report.inspection.weights]
    for ours, theirs in zip(keras3_file.weights, report.inspection.weights):
        assert sorted(set(ours.codes)) == sorted(set(theirs.codes)), ours.name
    # The same bytes but for tensor names (Keras 2 calls its wrappers quant_<name>, its
    # operator layers tf.__operators__.add, ...): the sizes differ by the names' lengths.
    name_bytes = [sum(len(detail["name"]) for detail in
                      load_interpreter(str(tmp_path / name)).get_tensor_details())
                  for name in ("keras3.tflite", "keras2.tflite")]
    extra = report.size_bytes - result["size"]
    assert abs(extra - (name_bytes[1] - name_bytes[0])) <= 64, (
        result["size"], report.size_bytes, name_bytes)


IMAGENET_FRONT = textwrap.dedent("""
    import json, sys
    import keras
    import numpy as np
    import tf_qnets

    # EfficientNet's front as keras.applications builds it with weights="imagenet" on Keras 3:
    # Rescaling(1/255) -> Normalization (statistics in its variables, loaded) -> a per-channel
    # Rescaling(1 / sqrt(std)); then a small CNN
    keras.utils.set_random_seed(0)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    constant = sys.argv[2] == "constant"      # EfficientNetV2's front: constant statistics
    if constant:
        norm = keras.layers.Normalization(mean=list(mean), variance=list(std ** 2), name="norm")
    else:
        norm = keras.layers.Normalization(axis=-1, name="norm")
    x = norm(x)
    x = keras.layers.Rescaling(list(1.0 / np.sqrt(std)), name="channel_scale")(x)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.Conv2D(8, 3, strides=2, name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("swish", name="stem_act")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="out")(x))
    if not constant:
        norm.set_weights([w.astype("float32") for w in (mean, std ** 2)] + [np.array(0)])
        norm.finalize_state()          # as load_weights does
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (96, 12, 12, 3)).astype("float32")
    qat = tf_qnets.quantize_model(model, 4, 4, first_last="int8", calibration_data=images[:32],
                                  verbose=0)
    float_norm = np.asarray(keras.Model(model.inputs, norm.output)(images[:8]))
    qat_norm = np.asarray(keras.Model(qat.inputs, qat.get_layer("norm").output)(images[:8]))
    report = tf_qnets.export_tflite(qat, sys.argv[1], images[:32], verify_data=images[32:])
    print("RESULT", json.dumps({
        "norm_diff": float(np.abs(float_norm - qat_norm).max()),
        "norm_min": float(float_norm.min()),
        "depthwise": dict((name, count) for name, _, count in report.ops).get("DEPTHWISE_CONV_2D"),
        "agreement": report.verification.agreement,
        "max_abs_diff": report.verification.max_abs_diff,
        "off_lattice": report.off_lattice}))
""")


@pytest.mark.parametrize("statistics", ["variables", "constant"])
def test_the_imagenet_front_of_a_keras3_efficientnet_exports_exactly(tmp_path, statistics):
    """Keras 3 under JAX: the quantized model normalizes with the statistics its Normalization
    holds (Keras 3's ``set_weights`` leaves the tensors it derives from them to
    ``finalize_state``), both per-channel layers become 1x1 depthwise convolutions and the
    file agrees with the Keras model (tests/test_channel_affine.py: the same on Keras 2);
    constant statistics (EfficientNetV2) move into variables, so the mean is snapped too."""
    pytest.importorskip("jax")
    script = tmp_path / "front.py"
    script.write_text(IMAGENET_FRONT)
    output = run_keras3([sys.executable, str(script), str(tmp_path / "front.tflite"),
                         statistics], "jax")
    result = json.loads(output.split("RESULT ")[-1].splitlines()[0])
    assert result["norm_min"] < -1.5
    assert result["norm_diff"] < 0.05, result          # within about one int8 step
    assert result["depthwise"] == 2, result
    assert result["off_lattice"] == [], result
    assert result["agreement"] == 1.0 and result["max_abs_diff"] < 1e-3, result

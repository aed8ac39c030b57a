"""Where the Keras hard model and its integer file part: the two rounding sources, measured.

A trained network (``benchmarks/export_zoo.py --train``'s recipe: Fashion-MNIST at 32x32x3,
``--float-epochs`` float, one ``--bits`` fine-tuning run) is exported, and the top-1
agreement of the Keras hard model with the file (XNNPACK, as a phone runs it) is measured
four ways:

1. as the user runs it;
2. with the test images moved onto the file's int8 input grid first
   (``x -> s * (clip(round(x / s) + z) - z)``), so that the file's input rounding plays no
   part;
3. with every folded bias of the Keras model moved onto the file's accumulator lattice
   (the int32 bias unit ``u_c = s_in * s_w,c`` the converter chose, read from the file):
   ``shift_c -> u_c * round(shift_c / u_c)``, then exported again; this is the rounding
   the file applies to every bias, made in the Keras model too;
4. both.

Since ``quantize_model`` gives the Keras model an int8 input quantizer with the file's range,
2 equals 1 (the model rounds its input itself); and since ``TemperatureScheduler`` ends
``fit`` by moving the biases whose unit the model fixes onto their lattice
(:mod:`tf_qnets.core.bias_lattice`), 3 adds only the layers whose input scale comes from a
calibrated range. If 4 reaches the agreement target and 1-3 do
not, those two roundings are what the Keras
hard forward must simulate. Steps 3-4 change the Keras model of this benchmark (a few
hundredths of an output step per channel); a user's model is never touched.

A second check builds a one-operator file (an int8 1x1 CONV_2D with a per-channel kernel,
input zero point 120, as in MobileNetV2's projections) and compares both TFLite kernel sets
with the integer formula ``round(s_in s_w,c / s_out * (sum q_in q_w + bias)) + z_out``.

    python benchmarks/exactness_probe.py --models MobileNetV2 ResNet50 --bits W4A4 W3A3
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tf_qnets  # noqa: E402
from tf_qnets.keras2.backend import keras, tf  # noqa: E402
from tf_qnets.export import export_tflite  # noqa: E402
from tf_qnets.core.weight_codes import bn_fold_factors  # noqa: E402
from tf_qnets.export.convert import convert_function  # noqa: E402
from tf_qnets.runtime import load_interpreter, predict  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_zoo  # noqa: E402

KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["MobileNetV2"], choices=export_zoo.MODELS)
    parser.add_argument("--bits", nargs="+", default=["W3A3"])
    parser.add_argument("--train-images", type=int, default=10000)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--float-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)
    args.size = 32
    return args


def on_input_grid(path, x):
    """``x`` moved onto the int8 grid of the file's (single) float input's QUANTIZE op."""
    interpreter = load_interpreter(path)
    detail = interpreter.get_input_details()[0]
    shape = tuple(detail["shape"][1:])
    grid = [t for t in interpreter.get_tensor_details()
            if t["dtype"] == np.int8 and tuple(t["shape"][1:]) == shape]
    if not grid:
        raise ValueError(f"{path}: no int8 tensor of the input's shape {shape}.")
    scale, zero = grid[0]["quantization"]
    codes = np.clip(np.round(x / scale) + zero, -128, 127)
    return ((codes - zero) * scale).astype(np.float32)


def bias_units(path):
    """``{kernel layer name: int32 bias unit per output channel}`` read from the file (the
    exporter names each kernel ``<layer>/pinned_kernel``)."""
    interpreter = load_interpreter(path, kernels="reference")
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    units = {}
    for op in interpreter._get_ops_details():
        inputs = [i for i in op["inputs"] if i >= 0]
        if op["op_name"] not in KERNEL_OPS or len(inputs) < 3:
            continue
        kernel_name = tensors[inputs[1]]["name"]
        if "/pinned_kernel" not in kernel_name:
            continue
        layer = kernel_name.split(";")[-1].split("/pinned_kernel")[0]
        units[layer] = np.asarray(tensors[inputs[2]]["quantization_parameters"]["scales"],
                                  np.float64)
    return units


def snap_biases(qat, units):
    """Move each folded bias of ``qat`` onto its lattice ``units[layer]``; returns the count.

    A kernel layer followed by a BatchNormalization has the folded bias
    ``shift = beta + (bias - mean) * g`` with ``g = gamma / sqrt(var + eps)``: ``beta`` moves.
    A kernel layer without one moves its own bias.
    """
    snapped = 0
    for name, unit in units.items():
        try:
            layer = qat.get_layer(name)
        except ValueError:
            continue
        inner = getattr(layer, "layer", layer)
        readers = [node.outbound_layer for node in layer.outbound_nodes]
        bn = readers[0] if len(readers) == 1 else None
        bn_inner = getattr(bn, "layer", bn)
        bias = inner.bias.numpy().astype(np.float64) if getattr(inner, "use_bias", False) else 0.0
        if isinstance(bn_inner, keras.layers.BatchNormalization):
            g, bn_shift = bn_fold_factors(bn_inner.moving_mean.numpy(),
                                          bn_inner.moving_variance.numpy(), bn_inner.epsilon,
                                          bn_inner.gamma.numpy(), bn_inner.beta.numpy())
            shift = bn_shift + bias * g
            target = np.round(shift / unit) * unit
            bn_inner.beta.assign((bn_inner.beta.numpy() + (target - shift)).astype(np.float32))
        elif getattr(inner, "use_bias", False):
            inner.bias.assign((np.round(bias / unit) * unit).astype(np.float32))
        else:
            continue
        snapped += 1
    return snapped


def top1_agreement(qat, path, x):
    return tf_qnets.verify_tflite(qat, path, x).agreement


def one_conv_check(folder):
    """Share of outputs where each TFLite kernel set departs from the integer formula."""
    rng = np.random.default_rng(0)
    s_in, z_in, cin, cout, k = 0.46858215, 120, 16, 8, 31
    codes = rng.choice([-4, -2, -1, 0, 1, 2, 4], size=(1, 1, cin, cout)).astype(np.float32)
    s_w = rng.uniform(0.15, 0.25, cout).astype(np.float32)
    bias = rng.uniform(-1, 1, cout).astype(np.float32)
    lo_out, hi_out = -5.04, 5.16

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, cin], tf.float32)])
    def conv(x):
        x = tf.quantization.fake_quant_with_min_max_args(x, (-128 - z_in) * s_in, (127 - z_in) * s_in)
        w = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            tf.constant(codes * s_w), -127 * s_w / k, 127 * s_w / k, narrow_range=True)
        y = tf.nn.bias_add(tf.nn.conv2d(x, w, 1, "VALID"), bias)
        return tf.quantization.fake_quant_with_min_max_args(y, lo_out, hi_out)

    path = os.path.join(folder, "one_conv.tflite")
    with open(path, "wb") as handle:
        handle.write(convert_function(conv.get_concrete_function()))
    x = (rng.integers(0, 8, size=(64, 8, 8, cin)) * s_in).astype(np.float32)
    interpreter = load_interpreter(path, kernels="reference")
    tensors = interpreter.get_tensor_details()
    kernel = next(t for t in tensors if t["dtype"] == np.int8 and t["shape"][0] == cout)
    bias_t = next(t for t in tensors if t["dtype"] == np.int32)
    out_t = next(t for t in tensors if t["dtype"] == np.int8 and t["shape"][-1] == cout
                 and t["shape"][0] != cout)
    q_w = interpreter.get_tensor(kernel["index"]).astype(np.float64)[:, 0, 0, :]
    q_b = interpreter.get_tensor(bias_t["index"]).astype(np.float64)
    unit = np.asarray(bias_t["quantization_parameters"]["scales"], np.float64)
    s_out, z_out = out_t["quantization"]
    acc = np.einsum("bhwi,oi->bhwo", np.round(x / s_in), q_w) + q_b
    want = (np.clip(np.round(acc * unit / s_out) + z_out, -128, 127) - z_out) * s_out
    result = {}
    for kernels in ("default", "reference"):
        got = predict(load_interpreter(path, kernels=kernels), x)
        result[kernels] = float(np.mean(np.abs(got - want) > s_out / 2))
    return result


def main(argv=None):
    args = parse_args(argv)
    wall = time.perf_counter()
    data = export_zoo.fashion_mnist_rgb(args)
    (x, y), (x_test, y_test) = data
    with tempfile.TemporaryDirectory() as folder:
        check = one_conv_check(folder)
        print(f"one int8 1x1 CONV_2D (input zero point 120), outputs off the integer formula: "
              f"XNNPACK {100 * check['default']:.2f}%, reference kernels "
              f"{100 * check['reference']:.2f}%", flush=True)
        for name in args.models:
            model, _ = export_zoo.train_float(name, args, x, y)
            for bits in args.bits:
                qat = export_zoo.fine_tune(model, bits, args, x, y)
                path = os.path.join(folder, f"{name}_{bits}.tflite")
                export_tflite(qat, path, x[:64])
                as_is = top1_agreement(qat, path, x_test)
                on_grid = top1_agreement(qat, path, on_input_grid(path, x_test))
                snapped = snap_biases(qat, bias_units(path))
                snapped_path = os.path.join(folder, f"{name}_{bits}_snapped.tflite")
                export_tflite(qat, snapped_path, x[:64])
                biases = top1_agreement(qat, snapped_path, x_test)
                both = top1_agreement(qat, snapped_path, on_input_grid(snapped_path, x_test))
                print(f"[{name} {bits}] agreement with the file (XNNPACK), {len(x_test)} test "
                      f"images: as is {100 * as_is:.2f}% | inputs on the file's grid "
                      f"{100 * on_grid:.2f}% | biases on the accumulator lattice ({snapped} "
                      f"layers) {100 * biases:.2f}% | both {100 * both:.2f}%", flush=True)
            keras.backend.clear_session()
    print(f"Command: python benchmarks/exactness_probe.py {' '.join(sys.argv[1:] if argv is None else argv)}"
          f" ({(time.perf_counter() - wall) / 60:.1f} min)")


if __name__ == "__main__":
    main()

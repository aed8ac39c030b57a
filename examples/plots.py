"""Pictures for the Fashion-MNIST example: learned staircases over histograms, accuracy vs bits."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tf_qnets import QNetsQuantizer, hard_staircase, quantizer_states, soft_staircase  # noqa: E402
import tf_keras as keras  # noqa: E402


def _quantizer_input(model, wrapper, quantizer, role, inputs):
    """The tensor a quantizer sees: the float kernel, or the layer output before quantization."""
    if role == "weights":
        return np.asarray(wrapper._weight_vars[0][0].numpy())
    probe = keras.Model(model.inputs, wrapper.output)
    quantizer.bypass = True
    try:
        return np.asarray(probe(inputs, training=False))
    finally:
        quantizer.bypass = False


def plot_staircases(model, inputs, path, max_panels=4):
    """Draw up to ``max_panels`` staircases (hard and soft at the current T) over their input histogram."""
    chosen = [s for s in quantizer_states(model) if isinstance(s[3], QNetsQuantizer)]
    weights = [s for s in chosen if s[1] == "weights"][:max_panels // 2]
    outputs = [s for s in chosen if s[1] == "output"][:max_panels - len(weights)]
    panels = weights + outputs
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for axis, (wrapper, role, tensor, quantizer, variables) in zip(axes[0], panels):
        values = _quantizer_input(model, wrapper, quantizer, role, inputs).ravel()
        alpha, beta = float(variables["alpha"].numpy()), float(variables["beta"].numpy())
        thresholds = variables["thresholds"].numpy()
        temperature = float(variables["temperature"].numpy())
        low, high = np.percentile(values, [0.1, 99.9])
        span = max(high - low, 1e-6)
        grid = np.linspace(low - 0.1 * span, high + 0.1 * span, 800).astype("float32")
        axis.hist(values, bins=120, range=(grid[0], grid[-1]), color="#c8d6e5", density=True)
        axis.set_yticks([])
        twin = axis.twinx()
        twin.plot(grid, hard_staircase(grid, alpha, beta, thresholds, quantizer.levels).numpy(),
                  color="#222f3e", lw=1.6, label="hard (inference)")
        twin.plot(grid, soft_staircase(grid, alpha, beta, thresholds, temperature,
                                       quantizer.levels).numpy(),
                  color="#ee5253", lw=1.0, ls="--", label=f"soft, T={temperature:g}")
        kind = "weights" if role == "weights" else "activations"
        axis.set_title(f"{wrapper.layer.name} {kind}\nlevels {list(quantizer.levels.levels)}",
                       fontsize=8)
        axis.set_xlabel("input value")
        twin.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_accuracy(float_accuracy, rows, path):
    """Keras (hard) and TFLite accuracy per setting, with the float model as a line."""
    names = [row["setting"] for row in rows]
    positions = np.arange(len(rows))
    figure, axis = plt.subplots(figsize=(1.6 * len(rows) + 3, 3.4))
    axis.bar(positions - 0.18, [row["keras_hard"] for row in rows], 0.36, label="Keras (hard)")
    axis.bar(positions + 0.18, [row["tflite"] for row in rows], 0.36, label="TFLite int8")
    axis.axhline(float_accuracy, color="k", ls="--", lw=1, label=f"float {float_accuracy:.4f}")
    lowest = min([float_accuracy] + [row["tflite"] for row in rows] + [row["keras_hard"] for row in rows])
    axis.set_ylim(max(0.0, lowest - 0.05), 1.0)
    axis.set_xticks(positions, names)
    axis.set_ylabel("test accuracy")
    axis.set_title("Fashion-MNIST accuracy by bit width")
    axis.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

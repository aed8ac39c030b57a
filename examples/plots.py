"""Pictures for the Fashion-MNIST example: learned staircases over histograms, accuracy vs bits."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tf_qnets.core.staircase import hard_staircase, soft_staircase  # noqa: E402


def keras2_panels(model, inputs, max_panels=4):
    """``[(title, values, alpha, beta, thresholds, temperature, levels)]`` of up to
    ``max_panels`` staircases of a Keras 2 (tf_keras) QAT model: half weights, half outputs."""
    import tf_keras as keras
    from tf_qnets import QNetsQuantizer, quantizer_states

    chosen = [s for s in quantizer_states(model) if isinstance(s[3], QNetsQuantizer)]
    weights = [s for s in chosen if s[1] == "weights"][:max_panels // 2]
    outputs = [s for s in chosen if s[1] == "output"][:max_panels - len(weights)]
    panels = []
    for wrapper, role, _, quantizer, variables in weights + outputs:
        if role == "weights":   # the float kernel the quantizer reads
            values = np.asarray(wrapper._weight_vars[0][0].numpy())
        else:                   # the layer output before its quantizer
            probe = keras.Model(model.inputs, wrapper.output)
            quantizer.bypass = True
            try:
                values = np.asarray(probe(inputs, training=False))
            finally:
                quantizer.bypass = False
        panels.append((f"{wrapper.layer.name} {'weights' if role == 'weights' else 'activations'}",
                       values, float(variables["alpha"].numpy()), float(variables["beta"].numpy()),
                       variables["thresholds"].numpy(), float(variables["temperature"].numpy()),
                       quantizer.levels))
    return panels


def keras3_panels(model, inputs, max_panels=4):
    """The same panels for a Keras 3 QAT model (any backend)."""
    import keras
    from tf_qnets.keras3.quantizer import QNetsQuantizer
    from tf_qnets.keras3.wrapper import QNetsWrapper

    def numpy(variable):
        return np.asarray(keras.ops.convert_to_numpy(variable))

    wrappers = [layer for layer in model.layers if isinstance(layer, QNetsWrapper)]
    weights = [(w, w.weight_quantizer) for w in wrappers
               if isinstance(w.weight_quantizer, QNetsQuantizer)][:max_panels // 2]
    outputs = [(w, w.output_quantizer) for w in wrappers
               if isinstance(w.output_quantizer, QNetsQuantizer)][:max_panels - len(weights)]
    panels = []
    for role, chosen in (("weights", weights), ("activations", outputs)):
        for wrapper, quantizer in chosen:
            if role == "weights":
                values = numpy(wrapper.layer.kernel)
            else:
                probe = keras.Model(model.inputs[0], wrapper.output)   # one input: the image
                quantizer.bypass = True
                try:
                    values = numpy(probe(inputs, training=False))
                finally:
                    quantizer.bypass = False
            panels.append((f"{wrapper.layer.name} {role}", values, float(numpy(quantizer.alpha)),
                           float(numpy(quantizer.beta)), numpy(quantizer.thresholds),
                           float(numpy(quantizer.temperature)), quantizer.levels))
    return panels


def plot_staircases(model, inputs, path, max_panels=4):
    """Draw up to ``max_panels`` staircases (hard, and soft at the current T) of a Keras 2 or
    Keras 3 QAT model over the histogram of what each quantizer reads."""
    keras3 = type(model).__module__.startswith("keras.")
    panels = (keras3_panels if keras3 else keras2_panels)(model, inputs, max_panels)
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for axis, (title, values, alpha, beta, thresholds, temperature, levels) in zip(axes[0], panels):
        values = values.ravel()
        low, high = np.percentile(values, [0.1, 99.9])
        span = max(high - low, 1e-6)
        grid = np.linspace(low - 0.1 * span, high + 0.1 * span, 800)
        axis.hist(values, bins=120, range=(grid[0], grid[-1]), color="#c8d6e5", density=True)
        axis.set_yticks([])
        twin = axis.twinx()
        twin.plot(grid, hard_staircase(grid, alpha, beta, thresholds, levels),
                  color="#222f3e", lw=1.6, label="hard (inference)")
        twin.plot(grid, soft_staircase(grid, alpha, beta, thresholds, temperature, levels),
                  color="#ee5253", lw=1.0, ls="--", label=f"soft, T={temperature:g}")
        axis.set_title(f"{title}\nlevels {list(levels.levels)}", fontsize=8)
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

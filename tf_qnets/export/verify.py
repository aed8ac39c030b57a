"""Fidelity of an exported file: the TFLite model against the Keras hard model.

For inputs ``x`` (and optional labels ``y``) both models run in inference mode (the
Keras model with ``training=False``: the hard staircase) and we report

* agreement: the fraction of samples whose top-1 class is the same;
* both accuracies when labels are given;
* the largest ``|logit_keras - logit_tflite|`` over all samples and outputs;
* with ``kernels="both"``, also the file against itself: the top-1 agreement of its default
  (XNNPACK) run with its reference-kernel run. Both are valid executions of the same integer
  file; they round some ties and near-ties differently, and a deep low-bit network can
  amplify those differences. Agreement with Keras cannot be read more finely than this.

The TFLite side runs in :mod:`tf_qnets.runtime` (LiteRT), as a phone would.

Example::

    report = verify_tflite(qat, "model.tflite", (x_test, y_test))
    print(report)   # agreement 99.9% (9990/10000) | accuracy keras 90.10% tflite 90.05% | ...
"""

import dataclasses

import numpy as np

from tf_qnets.keras2.backend import tf
from tf_qnets.runtime import load_interpreter, predict

__all__ = ["VerificationReport", "verify_tflite", "split_data"]


@dataclasses.dataclass
class VerificationReport:
    """Agreement, accuracies (``None`` without labels) and the largest logit difference."""

    samples: int
    agreement: float
    keras_accuracy: float = None
    tflite_accuracy: float = None
    max_abs_diff: float = 0.0
    kernels: str = "default"
    reference: "VerificationReport" = None  # the reference-kernel run when kernels="both"
    kernels_agreement: float = None  # default vs reference kernels, top-1 (kernels="both")

    @property
    def accuracy_diff(self):
        if self.keras_accuracy is None:
            return None
        return self.tflite_accuracy - self.keras_accuracy

    def __str__(self):
        text = (f"agreement {100 * self.agreement:.2f}% "
                f"({int(round(self.agreement * self.samples))}/{self.samples})")
        if self.keras_accuracy is not None:
            text += (f" | accuracy keras {100 * self.keras_accuracy:.2f}% "
                     f"tflite {100 * self.tflite_accuracy:.2f}%")
        text += f" | max |logit diff| {self.max_abs_diff:.4g}"
        if self.reference is not None:
            text += f" || reference kernels: {self.reference}"
        if self.kernels_agreement is not None:
            text += (f" || the file's default vs reference kernels: agreement "
                     f"{100 * self.kernels_agreement:.2f}%")
        return text


def split_data(data, argument="data"):
    """``(inputs, labels or None)`` as numpy arrays from an array, an (x, y) tuple or a Dataset."""
    if isinstance(data, tf.data.Dataset):
        xs, ys = [], []
        for element in data:
            if isinstance(element, (tuple, list)):
                xs.append(np.asarray(element[0]))
                if len(element) > 1:
                    ys.append(np.asarray(element[1]))
            else:
                xs.append(np.asarray(element))
        if not xs:
            raise ValueError(f"`{argument}` is empty.")
        x = np.concatenate(xs) if xs[0].ndim > 0 else np.stack(xs)
        y = np.concatenate(ys) if ys and len(ys) == len(xs) else None
        return x, y
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    if isinstance(data, (np.ndarray, tf.Tensor)):
        return np.asarray(data), None
    raise TypeError(
        f"`{argument}` must be an array of inputs, an (inputs, labels) tuple, or a tf.data.Dataset; "
        f"got {type(data).__name__}.")


def _top1(outputs):
    outputs = np.asarray(outputs)
    return outputs.argmax(-1) if outputs.ndim > 1 and outputs.shape[-1] > 1 else (outputs.ravel() > 0.5)


def _compare(keras_out, tflite_out, y, kernels):
    if keras_out.shape != tflite_out.shape:
        raise ValueError(
            f"The Keras model gives outputs of shape {keras_out.shape} but the TFLite file "
            f"{tflite_out.shape}; was the file exported from this model?")
    keras_top, tflite_top = _top1(keras_out), _top1(tflite_out)
    report = VerificationReport(
        samples=len(keras_out), agreement=float(np.mean(keras_top == tflite_top)),
        max_abs_diff=float(np.max(np.abs(keras_out - tflite_out))), kernels=kernels)
    if y is not None:
        labels = np.asarray(y).reshape(len(keras_out), -1)
        labels = labels.argmax(-1) if labels.shape[1] > 1 else labels[:, 0]
        report.keras_accuracy = float(np.mean(keras_top == labels))
        report.tflite_accuracy = float(np.mean(tflite_top == labels))
    return report


def verify_tflite(qat_model, tflite_path, data, batch_size=256, kernels="default"):
    """Compare ``qat_model`` (hard staircase) with the .tflite file on ``data``; see module docstring.

    ``kernels``: ``"default"`` runs the file as a phone's default runtime does (the XNNPACK
    delegate); ``"reference"`` with TFLite's reference kernels (fixed-point arithmetic that
    rounds each requantization twice, see :func:`tf_qnets.runtime.load_interpreter`);
    ``"both"`` returns the default report with the
    reference one in its ``reference`` field and the top-1 agreement of the two file runs
    with each other in ``kernels_agreement``.
    """
    if kernels not in ("default", "reference", "both"):
        raise ValueError(f"`kernels` must be 'default', 'reference' or 'both', got {kernels!r}.")
    x, y = split_data(data)
    if len(x) == 0:
        raise ValueError("`data` is empty.")
    x = x.astype(np.float32)
    keras_out = np.concatenate([
        np.asarray(qat_model(x[i:i + batch_size], training=False))
        for i in range(0, len(x), batch_size)])
    runs = ("default", "reference") if kernels == "both" else (kernels,)
    file_outs = [predict(load_interpreter(tflite_path, kernels=run), x, batch_size=batch_size)
                 for run in runs]
    reports = [_compare(keras_out, out, y, run) for out, run in zip(file_outs, runs)]
    if kernels == "both":
        reports[0].reference = reports[1]
        reports[0].kernels_agreement = float(np.mean(_top1(file_outs[0]) == _top1(file_outs[1])))
    return reports[0]

"""The public functions that take a model, for Keras 2 and Keras 3 models alike.

The model's own class says which Keras built it: a ``tf_keras`` model goes to the Keras 2
path (``tf_qnets.keras2``: tfmot's ``quantize_apply`` flow), a Keras 3 model (``import
keras``, TensorFlow or JAX backend) to the Keras 3 path (``tf_qnets.keras3``). Only the path
a model needs is imported: quantizing, scheduling, summarising or recalibrating a Keras 3
model on JAX never imports TensorFlow. :func:`load_model` reads the Keras version a file
was saved with.

Example::

    qat = tf_qnets.quantize_model(model, w_bits=3, a_bits=3, calibration_data=x[:512])
    tf_qnets.summary(qat)                          # either Keras
    tf_qnets.set_temperature(qat, activations=50.0)
"""

import importlib
import json
import os
import zipfile

from tf_qnets.core.bias_lattice import snap_biases as snap_to_lattice
from tf_qnets.core.keras_version import is_keras3_object
from tf_qnets.core.lowering import DEFAULT_FINER_INPUTS, check_finer_inputs

__all__ = [
    "count_quantizers",
    "get_temperatures",
    "is_keras3_object",
    "is_quantized_model",
    "keras_major_version_of_file",
    "load_model",
    "path_of",
    "quantization_gap",
    "quantize_model",
    "recalibrate_batch_norm",
    "set_temperature",
    "snap_biases",
    "summary",
]


def path_of(model):
    """``"keras3"`` for a Keras 3 model, ``"keras2"`` for anything else."""
    return "keras3" if is_keras3_object(model) else "keras2"


def _module(path, name):
    return importlib.import_module(f"tf_qnets.{path}.{name}")


def quantize_model(model, w_bits=3, a_bits=None, **options):
    """Turn a float Keras model into a Quantization Network ready for fine-tuning.

    Keras 2 (``tf_keras``) models: :func:`tf_qnets.keras2.api.quantize_model`; Keras 3
    models: :func:`tf_qnets.keras3.api.quantize_model`. Both take the same arguments
    (``w_bits``, ``a_bits``, ``calibration_data``, ``weight_scheme``, ``thresholds``,
    ``first_last``, ``per_layer``, ``exclude``, ``gradient``, ``activation_gradient``,
    ``train_thresholds``, ``batch_norm``, ``verbose``) with the same meaning, read by one
    planner (``tf_qnets.core.plan``). Each quantized tensor ``x`` becomes::

        training:  alpha * (sum_i s_i * sigmoid(clip(T (beta x - b_i), -10, 10)) - o)
        inference: alpha * (sum_i s_i * [beta x > b_i] - o)

    Example::

        qat = tf_qnets.quantize_model(float_model, w_bits=3, a_bits=3, calibration_data=x[:512])
    """
    return _module(path_of(model), "api").quantize_model(model, w_bits, a_bits, **options)


def is_quantized_model(model):
    """True when ``model`` (either Keras) contains tf_qnets quantizers."""
    return _module(path_of(model), "api").is_quantized_model(model)


def count_quantizers(model, role=None):
    """Number of sum-of-sigmoids quantizers in ``model``; ``role`` (``"weights"`` or
    ``"activations"``) counts one kind only."""
    if role not in (None, "weights", "activations"):
        raise ValueError(f"`role` must be None, 'weights' or 'activations', got {role!r}.")
    return _module(path_of(model), "api").count_quantizers(model, role)


def set_temperature(model, weights=None, activations=None):
    """Assign the temperature ``T`` of every weight and/or activation quantizer of ``model``."""
    return _module(path_of(model), "schedule").set_temperature(
        model, weights=weights, activations=activations)


def get_temperatures(model):
    """``{quantizer: T}`` for every quantizer of ``model``."""
    return _module(path_of(model), "schedule").get_temperatures(model)


def summary(model, print_fn=print):
    """Print and return the per-layer bits / size / MACs table of a quantized ``model``."""
    return _module(path_of(model), "summary").summary(model, print_fn=print_fn)


def recalibrate_batch_norm(model, data, max_batches=None, verbose=0):
    """Re-estimate the BatchNormalization statistics after quantized layers on the hard
    network (``quantize_model(..., batch_norm="batch")`` models)::

        moving_mean = E[x],  moving_variance = E[x^2] - E[x]^2   (x: the layer's input)
    """
    return _module(path_of(model), "recalibrate").recalibrate_batch_norm(
        model, data, max_batches=max_batches, verbose=verbose)


def snap_biases(model, finer_inputs=DEFAULT_FINER_INPUTS):
    """Move the folded biases that the integer file rounds onto its int32 lattice.

    A kernel layer exported as a plain kernel op stores its folded bias ``b_c`` as the int32
    ``round(b_c / u_c)`` (``u_c = s_in * s_w,c``, input scale times weight scale); this sets
    ``b_c -> u_c round(b_c / u_c)`` in ``model`` (the folded BatchNormalization's ``beta``,
    else the layer's ``bias``: at most half a unit), so that the Keras model adds the bias
    the file adds (:mod:`tf_qnets.core.bias_lattice`). A layer whose output the file stores
    at a fixed int8 range behind a BatchNormalization with a scale (the last convolution
    before a residual ``Add``) also gets its per-channel BN scale moved onto an odd grid (by
    at most 0.5%) and the int32 bias that keeps every value it can compute away from an int8
    rounding boundary, so that Keras' float32 rounds it as the file's exact integers do
    (:mod:`tf_qnets.core.rounding_margin`). ``TemperatureScheduler`` does it at
    the end of ``fit``; call it yourself after training without the scheduler, or after
    changing weights (``set_weights``, ``EarlyStopping(restore_best_weights=True)`` after the
    scheduler). ``export_tflite``'s report lists layers still off their lattice.

    ``finer_inputs``: the lattice of ``export_tflite(..., finer_inputs=finer_inputs)``
    (``True``, ``False`` or ``"auto"``, the default, which ``quantize_model`` and
    ``TemperatureScheduler`` use). For a file exported with another choice (``True``: a
    requantizing MUL before every linear layer that reads a staircase, for TFLite's reference
    kernels; ``False``: none, the fastest file) train with
    ``TemperatureScheduler(snap_biases=False)`` and call ``snap_biases(qat,
    finer_inputs=...)`` with the same value: a layer without that MUL has an ``m`` times
    coarser unit, so its biases move further.

    Returns:
      :class:`tf_qnets.core.bias_lattice.SnapReport` (``print`` it).

    Example::

        qat.fit(x, y, epochs=3)                   # no TemperatureScheduler
        print(tf_qnets.snap_biases(qat))
        tf_qnets.export_tflite(qat, "model.tflite", x[:256])
    """
    check_finer_inputs(finer_inputs)
    path = path_of(model)
    if not is_quantized_model(model):
        raise ValueError(
            "snap_biases: `model` has no tf_qnets quantizers; pass the model returned by "
            "tf_qnets.quantize_model().")
    return snap_to_lattice(model, _module(path, "describe_network").describe_network,
                           finer_inputs=finer_inputs)


def keras_major_version_of_file(path):
    """The major Keras version a ``.keras`` (zip) or ``.h5`` file was saved with, or None
    when the file does not say (a SavedModel folder, an unreadable file)."""
    path = os.fspath(path)
    version = None
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                version = json.loads(archive.read("metadata.json")).get("keras_version")
        except (KeyError, ValueError, OSError):
            return None
    elif os.path.isfile(path):
        try:
            import h5py
        except ImportError:
            return None
        try:
            with h5py.File(path, "r") as file:
                version = file.attrs.get("keras_version")
        except OSError:
            return None
        if isinstance(version, bytes):
            version = version.decode()
    try:
        return int(str(version).split(".")[0]) if version else None
    except ValueError:
        return None


def load_model(path, compile=True, **kwargs):
    """Load a model saved from a :func:`quantize_model` result, with Keras' safe mode on.

    A file saved by Keras 3 (read from its metadata) loads with Keras 3 on the backend of
    this process, whichever backend trained it (:func:`tf_qnets.keras3.saving.load_model`);
    a Keras 2 file or SavedModel folder loads with ``tf_keras``
    (:func:`tf_qnets.keras2.scope.load_model`).

    Example::

        qat = tf_qnets.load_model("qat.keras")
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a file or folder path, got {type(path).__name__}.")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"`path` {os.fspath(path)!r}: no SavedModel folder, .keras or .h5 file there.")
    if (keras_major_version_of_file(path) or 2) >= 3:
        return _module("keras3", "saving").load_model(path, compile=compile, **kwargs)
    return _module("keras2", "scope").load_model(path, compile=compile, **kwargs)


def quantization_gap(model):
    """The mean quantization gap of ``model``'s quantizers after their latest training call,
    ``mean |soft - hard| / alpha`` in levels (:mod:`tf_qnets.core.gap`); 0.0 before any."""
    return _module(path_of(model), "gap").quantization_gap(model)

"""``QuantizerTensorBoard``: watch the staircases anneal in TensorBoard.

For every low-bit quantizer (:class:`tf_qnets.QNetsQuantizer`) of the model being
trained, the callback writes four scalars to ``<log_dir>/quantizers``:

==================================  =====================================================
tag                                 value
==================================  =====================================================
``temperature/<layer>/<tensor>``    ``T``, as set by :class:`tf_qnets.TemperatureScheduler`
``alpha/<layer>/<tensor>``          the output scale (the deployed step size)
``beta/<layer>/<tensor>``           the input scale
``saturation/<layer>/<tensor>``     fraction of elements whose staircase is already hard
==================================  =====================================================

``<tensor>`` is ``kernel`` (or ``depthwise_kernel``) for weights and ``output`` for
activations. The saturation of a tensor ``x`` with thresholds ``b_1..b_n`` is::

    saturation = mean over elements of  [ min_i |T * (beta * x - b_i)| >= 10 ]

i.e. the share of elements for which every sigmoid argument sits at the clamp
(``+-10``, see :mod:`tf_qnets.tf.staircase`): there the soft staircase equals the
hard one up to ``sigmoid(-10) ~ 4.5e-5`` of a step and passes no gradient to ``x``.
It rises towards 1 as ``T`` grows.

* Weights: computed from the kernel itself.
* Activations: computed only when ``data`` is given, a small fixed batch of model
  inputs (e.g. 32 samples; a NumPy array or tensor). The network runs in inference
  mode (hard staircases upstream, BatchNormalization moving statistics), and each
  activation quantizer's input is read with that quantizer bypassed. Without ``data``
  the activation quantizers' saturation is not logged (their T, alpha, beta are).

tfmot's 8-bit quantizers (``first_last="int8"``) have no temperature and are skipped.

Example::

    qat.fit(ds, epochs=10, callbacks=[
        tf_qnets.TemperatureScheduler(base=10),
        tf_qnets.QuantizerTensorBoard("logs", data=x_train[:32]),
    ])
    # then: tensorboard --logdir logs     (pip install tensorboard to view)

The events are written with ``tf.summary.write`` and scalar metadata, so training
does not need the ``tensorboard`` package; viewing them does.

Reference: Yang et al., "Quantization Networks", CVPR 2019 (arXiv:1911.09464).
"""

import os

import numpy as np

from tf_qnets.core.quantizer_logs import RUN_NAME, LogCadence, saturation
from tf_qnets.keras2 import tfmot
from tf_qnets.keras2.backend import keras, tf
from tf_qnets.keras2.quantizer import QNetsQuantizer
from tf_qnets.keras2.wrapper import QNetsWrapper, quantizer_states

__all__ = ["QuantizerTensorBoard", "saturation"]

def _scalar_metadata():
    """Metadata that marks a summary as a TensorBoard scalar (the ``scalars`` plugin)."""
    return tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=1)  # DATA_CLASS_SCALAR


@keras.utils.register_keras_serializable(package="tf_qnets")
class QuantizerTensorBoard(LogCadence, keras.callbacks.Callback):
    """Log temperature, alpha, beta and saturation of every quantizer to TensorBoard.

    Args:
      log_dir: folder for the event files (written under ``<log_dir>/quantizers``, so
        the same ``log_dir`` can be shared with ``keras.callbacks.TensorBoard``).
      update_freq: ``"epoch"`` (log at the end of each epoch, step = epoch index) or
        an int ``N`` (log every ``N`` training batches, step = the optimizer's iteration
        count, which continues across ``fit`` calls).
      data: optional fixed batch of model inputs for the activations' saturation
        (not part of ``get_config``).
    """

    def __init__(self, log_dir, update_freq="epoch", data=None):
        super().__init__()
        self._init_cadence(log_dir, update_freq, data)
        self._writer = None
        self._targets = []
        self._probe = None

    # --- setup -------------------------------------------------------------------------

    def _collect_targets(self):
        targets = []
        for wrapper, role, tensor_name, quantizer, variables in quantizer_states(self.model):
            if not isinstance(quantizer, QNetsQuantizer):
                continue
            kernel = None
            if role == "weights":
                kernel = next(weight for weight, owner, _ in tfmot.weight_quantizer_variables(wrapper) if owner is quantizer)
            targets.append((wrapper, role, tensor_name, quantizer, variables, kernel))
        return targets

    def _build_probe(self):
        """A model returning the input of every wrapper with an activation quantizer."""
        wrappers = [t[0] for t in self._targets if t[1] == "output"]
        if self.data is None or not wrappers:
            return None
        expected = tuple(self.model.inputs[0].shape[1:])
        got = tuple(self.data.shape[1:])
        if len(self.model.inputs) != 1 or len(expected) != len(got) or any(
                e is not None and e != g for e, g in zip(expected, got)):
            raise ValueError(
                f"QuantizerTensorBoard: `data` has shape {self.data.shape}, but the model expects "
                f"one input of shape {(None,) + expected} (batch first).")
        # Node 0 is the call inside the quantized model (later calls may reuse the layers).
        return keras.Model(self.model.inputs, [wrapper.get_input_at(0) for wrapper in wrappers])

    def on_train_begin(self, logs=None):
        self._targets = self._collect_targets()
        if not self._targets:
            raise ValueError(
                "QuantizerTensorBoard: the model has no tf_qnets low-bit quantizers; use it with a "
                "model returned by tf_qnets.quantize_model().")
        self._probe = self._build_probe()
        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, RUN_NAME))
        self._batches_seen = 0

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._probe = None

    # --- logging -----------------------------------------------------------------------

    def _activation_inputs(self):
        """Each activation quantizer's input on ``data``: {id(quantizer): array}."""
        if self._probe is None:
            return {}
        data = tf.convert_to_tensor(self.data, dtype=self.model.inputs[0].dtype)
        wrapper_inputs = self._probe(data, training=False)
        if not isinstance(wrapper_inputs, (list, tuple)):
            wrapper_inputs = [wrapper_inputs]
        found = {}
        outputs = [t for t in self._targets if t[1] == "output"]
        for (wrapper, _, _, quantizer, _, _), inputs in zip(outputs, wrapper_inputs):
            quantizer.bypass = True
            try:
                found[id(quantizer)] = np.asarray(wrapper(inputs, training=False))
            finally:
                quantizer.bypass = False
        return found

    def values(self):
        """``{tag: value}`` for the current state of the model (what the next write logs)."""
        activations = self._activation_inputs()
        values = {}
        for wrapper, role, tensor_name, quantizer, variables, kernel in self._targets:
            key = f"{wrapper.layer.name}/{tensor_name}"
            temperature = float(variables["temperature"].numpy())
            beta = float(variables["beta"].numpy())
            values[f"temperature/{key}"] = temperature
            values[f"alpha/{key}"] = float(variables["alpha"].numpy())
            values[f"beta/{key}"] = beta
            x = kernel.numpy() if kernel is not None else activations.get(id(quantizer))
            if x is not None:
                values[f"saturation/{key}"] = saturation(
                    x, beta, variables["thresholds"].numpy(), temperature)
        return values

    def _write(self, step):
        # tf.summary.write with scalar metadata is what tf.summary.scalar does, without
        # needing the tensorboard package at training time.
        metadata = _scalar_metadata()
        with self._writer.as_default():
            for tag, value in self.values().items():
                tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=metadata)
        self._writer.flush()

    def _iterations(self):
        iterations = getattr(getattr(self.model, "optimizer", None), "iterations", None)
        return None if iterations is None else int(iterations.numpy())

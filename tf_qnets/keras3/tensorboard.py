"""``QuantizerTensorBoard`` for Keras 3: watch the staircases anneal in TensorBoard.

For every quantizer of the model being trained the callback writes four scalars to
``<log_dir>/quantizers``, with the same tags as the Keras 2 callback
(:mod:`tf_qnets.keras2.tensorboard`):

==================================  =====================================================
tag                                 value
==================================  =====================================================
``temperature/<layer>/<tensor>``    ``T``, as set by the ``TemperatureScheduler``
``alpha/<layer>/<tensor>``          the output scale (the deployed step size)
``beta/<layer>/<tensor>``           the input scale
``saturation/<layer>/<tensor>``     share of elements whose staircase is already hard
==================================  =====================================================

``<tensor>`` is ``kernel`` (or ``depthwise_kernel``) for weights and ``output`` for
activations (the 8-bit quantizers of ``first_last="int8"`` have none of these and are
skipped, as on Keras 2); the saturation formula is in :mod:`tf_qnets.core.quantizer_logs`. Activation
saturation needs ``data`` (a small fixed batch of model inputs): the network runs in
inference mode and each activation quantizer's input is read with that quantizer bypassed.

The event files are written by :mod:`tf_qnets.core.event_file` (standard library only), so
the callback works under the JAX backend without TensorFlow; viewing them needs
``tensorboard``.

Example::

    qat.fit(x, y, epochs=10, callbacks=[
        tf_qnets.TemperatureScheduler(),
        tf_qnets.QuantizerTensorBoard("logs", data=x[:32]),
    ])
"""

import os

import keras
import numpy as np
from keras import ops

from tf_qnets.core.event_file import ScalarEventWriter
from tf_qnets.core.quantizer_logs import RUN_NAME, LogCadence, saturation
from tf_qnets.keras3.quantizer import QNetsQuantizer
from tf_qnets.keras3.wrapper import QNetsWrapper

__all__ = ["QuantizerTensorBoard"]


def _kernel_name(layer):
    return "depthwise_kernel" if isinstance(layer, keras.layers.DepthwiseConv2D) else "kernel"


@keras.saving.register_keras_serializable(package="tf_qnets")
class QuantizerTensorBoard(LogCadence, keras.callbacks.Callback):
    """Log temperature, alpha, beta and saturation of every quantizer to TensorBoard.

    Args:
      log_dir: folder for the event files (written under ``<log_dir>/quantizers``, so the
        same ``log_dir`` can be shared with ``keras.callbacks.TensorBoard``).
      update_freq: ``"epoch"`` (log at the end of each epoch, step = epoch index) or an int
        ``N`` (log every ``N`` training batches, step = the optimizer's iteration count).
      data: optional fixed batch of model inputs for the activations' saturation.
    """

    def __init__(self, log_dir, update_freq="epoch", data=None):
        super().__init__()
        self._init_cadence(log_dir, update_freq, data)
        self._writer = None
        self._targets = []
        self._probe = None

    def _collect_targets(self):
        targets = []
        for layer in self.model.layers:
            if not isinstance(layer, QNetsWrapper):
                continue
            if isinstance(layer.weight_quantizer, QNetsQuantizer):
                targets.append((layer, _kernel_name(layer.layer), layer.weight_quantizer))
            if isinstance(layer.output_quantizer, QNetsQuantizer):
                targets.append((layer, "output", layer.output_quantizer))
        return targets

    def _build_probe(self):
        wrappers = [layer for layer, tensor, _ in self._targets if tensor == "output"]
        if self.data is None or not wrappers:
            return None
        inputs = self.model.inputs
        expected = tuple(inputs[0].shape[1:])
        got = tuple(self.data.shape[1:])
        if len(inputs) != 1 or len(expected) != len(got) or any(
                e is not None and e != g for e, g in zip(expected, got)):
            raise ValueError(
                f"QuantizerTensorBoard: `data` has shape {self.data.shape}, but the model expects "
                f"one input of shape {(None,) + expected} (batch first).")
        return keras.Model(inputs, [wrapper.input for wrapper in wrappers])

    def on_train_begin(self, logs=None):
        self._targets = self._collect_targets()
        if not self._targets:
            raise ValueError(
                "QuantizerTensorBoard: the model has no tf_qnets quantizers; use it with a model "
                "returned by tf_qnets.quantize_model().")
        self._probe = self._build_probe()
        self._writer = ScalarEventWriter(os.path.join(self.log_dir, RUN_NAME))
        self._batches_seen = 0

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._probe = None

    def _activation_inputs(self):
        """Each activation quantizer's input on ``data``: {id(quantizer): array}."""
        if self._probe is None:
            return {}
        wrapper_inputs = self._probe(ops.convert_to_tensor(self.data, "float32"), training=False)
        if not isinstance(wrapper_inputs, (list, tuple)):
            wrapper_inputs = [wrapper_inputs]
        outputs = [(layer, quantizer) for layer, tensor, quantizer in self._targets
                   if tensor == "output"]
        found = {}
        for (wrapper, quantizer), inputs in zip(outputs, wrapper_inputs):
            quantizer.bypass = True
            try:
                found[id(quantizer)] = ops.convert_to_numpy(wrapper(inputs, training=False))
            finally:
                quantizer.bypass = False
        return found

    def values(self):
        """``{tag: value}`` for the current state of the model (what the next write logs)."""
        activations = self._activation_inputs()
        values = {}
        for wrapper, tensor, quantizer in self._targets:
            key = f"{wrapper.layer.name}/{tensor}"
            temperature = float(ops.convert_to_numpy(quantizer.temperature))
            beta = float(ops.convert_to_numpy(quantizer.beta))
            values[f"temperature/{key}"] = temperature
            values[f"alpha/{key}"] = float(ops.convert_to_numpy(quantizer.alpha))
            values[f"beta/{key}"] = beta
            if tensor == "output":
                x = activations.get(id(quantizer))
            else:
                x = ops.convert_to_numpy(wrapper.layer.kernel)
            if x is not None:
                values[f"saturation/{key}"] = saturation(
                    x, beta, np.asarray(ops.convert_to_numpy(quantizer.thresholds)), temperature)
        return values

    def _write(self, step):
        for tag, value in self.values().items():
            self._writer.write(tag, value, step)
        self._writer.flush()

    def _iterations(self):
        iterations = getattr(getattr(self.model, "optimizer", None), "iterations", None)
        return None if iterations is None else int(ops.convert_to_numpy(iterations))

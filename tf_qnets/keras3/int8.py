"""Standard int8 quantizers for the layers kept out of the low-bit scheme (``first_last="int8"``).

An int8 device computes the first and the last kernel layer with affine 8-bit
quantization. For a range ``[lo, hi]`` and the integer window ``[q_lo, q_hi]``::

    scale = (hi - lo) / (q_hi - q_lo)
    zp    = round(q_lo - lo / scale)                 (so that 0 is exactly representable)
    q     = clip(round(x / scale) + zp, q_lo, q_hi)
    x_hat = (q - zp) * scale                         (what the layer computes with)

``keras.quantizers.fake_quant_with_min_max_vars`` computes ``x_hat`` (forward) with a
straight-through gradient inside the range (zero outside), the same op tfmot's FakeQuant
quantizers use on the Keras 2 path (:mod:`tf_qnets.keras2.int8`); these layers simulate
exactly what those do:

* :class:`Int8WeightQuantizer`: the kernel, symmetric, narrow range (``[q_lo, q_hi] =
  [-127, 127]``, ``zp = 0``), one range ``[-m_c, m_c]`` per output channel with
  ``m_c = max|W[..., c]|`` taken from the current kernel at every call (tfmot's
  LastValueQuantizer): ``W_hat = clip(round(W / s_c), -127, 127) * s_c``, ``s_c = m_c / 127``.
  No state.
* :class:`Int8OutputQuantizer`: the layer output, asymmetric, ``[q_lo, q_hi] = [0, 255]``,
  one range ``[min_var, max_var]`` (non-trainable variables). In training each batch moves
  it as tfmot's MovingAverageQuantizer does (``decay = 0.999``)::

      min_var <- decay * min_var + (1 - decay) * min(min(x), 0)
      max_var <- decay * max_var + (1 - decay) * max(max(x), 0)

  and the batch is fake-quantized with the updated range; at inference the stored range
  is used. ``quantize_model`` initialises it from calibration data as
  ``[min(sample, 0), max(sample, 0)]`` (:meth:`Int8OutputQuantizer.initialize_range`).

Example::

    >>> import numpy as np
    >>> from tf_qnets.keras3.int8 import Int8OutputQuantizer, Int8WeightQuantizer
    >>> w = np.array([[0.5, -2.0], [0.2, 0.7]], "float32")
    >>> [[round(float(v), 4) for v in row] for row in Int8WeightQuantizer()(w)]  # s_c = m_c/127
    [[0.5, -2.0], [0.2008, 0.6929]]
    >>> q = Int8OutputQuantizer()
    >>> q.initialize_range(np.array([-1.0, 3.0]))
    >>> y = q(np.array([0.0, 3.0, 7.0], "float32"), training=False)   # clipped at 3
"""

import keras
import numpy as np
from keras import ops

__all__ = ["INT8_BITS", "Int8OutputQuantizer", "Int8WeightQuantizer", "is_int8_quantizer"]

INT8_BITS = 8
# tfmot's MovingAverageQuantizer (quant_ops.MovingAvgQuantize's default).
EMA_DECAY = 0.999
# A channel of zeros keeps a tiny range (keras2.int8.initialize_int8_weight_range's floor);
# so does an output range that is still empty.
MIN_WEIGHT_RANGE = 1e-8
# tfmot's initial range of a range variable, before calibration.
INITIAL_RANGE = (-6.0, 6.0)


@keras.saving.register_keras_serializable(package="tf_qnets")
class Int8WeightQuantizer(keras.layers.Layer):
    """Symmetric narrow-range 8-bit FakeQuant of a kernel (see the module docstring).

    Args:
      per_axis: one range per output channel (the kernel's last axis; default), or one for
        the whole kernel (``False``: DepthwiseConv2D, whose last axis is the multiplier).
      **kwargs: Keras layer arguments (``name``).

    Call ``q(kernel)``: ``clip(round(W / s), -127, 127) * s`` with ``s = max|W| / 127``
    (per channel), the range taken from ``kernel`` itself, in training and inference alike.
    """

    role = "weights"

    def __init__(self, per_axis=True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(per_axis, bool):
            raise TypeError(f"`per_axis` must be True or False, got {per_axis!r}.")
        self.per_axis = per_axis
        self.bypass = False

    def build(self, input_shape=None):
        self.built = True

    def call(self, inputs, training=None):
        if self.bypass:
            return inputs
        magnitude = ops.abs(inputs)
        if self.per_axis:
            if len(inputs.shape) < 2:
                raise ValueError(
                    f"{self.name}: per-channel int8 needs a kernel of rank >= 2, got shape "
                    f"{tuple(inputs.shape)}.")
            bound = ops.max(magnitude, axis=tuple(range(len(inputs.shape) - 1)))
        else:
            bound = ops.max(magnitude)
        # the range is read from the kernel, not learned (tfmot's assign cuts its gradient)
        bound = ops.stop_gradient(ops.maximum(bound, MIN_WEIGHT_RANGE))
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs, -bound, bound, num_bits=INT8_BITS, narrow_range=True,
            axis=-1 if self.per_axis else None)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["per_axis"] = self.per_axis
        return config


@keras.saving.register_keras_serializable(package="tf_qnets")
class Int8OutputQuantizer(keras.layers.Layer):
    """Asymmetric 8-bit FakeQuant of a layer output with a moving-average range.

    Args:
      ema_decay: the range's moving-average decay (tfmot's 0.999).
      **kwargs: Keras layer arguments (``name``).

    Variables: ``min_var`` and ``max_var`` (scalars, not trainable; saved with the model).
    Call ``q(x, training=...)``: in training the range first moves towards the batch's
    ``[min(min(x), 0), max(max(x), 0)]`` (see the module docstring), then ``x`` is
    fake-quantized to ``[0, 255]`` codes on it; at inference the stored range is used.
    ``bypass = True`` (calibration) returns ``x`` unchanged and updates nothing.
    """

    role = "activations"

    def __init__(self, ema_decay=EMA_DECAY, **kwargs):
        super().__init__(**kwargs)
        ema_decay = float(ema_decay)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"`ema_decay` must be in [0, 1), got {ema_decay!r}.")
        self.ema_decay = ema_decay
        self.bypass = False

    def build(self, input_shape=None):
        self.min_var = self.add_weight(
            name="min_var", shape=(), trainable=False,
            initializer=keras.initializers.Constant(INITIAL_RANGE[0]))
        self.max_var = self.add_weight(
            name="max_var", shape=(), trainable=False,
            initializer=keras.initializers.Constant(INITIAL_RANGE[1]))
        self.built = True

    def call(self, inputs, training=None):
        if self.bypass:
            return inputs
        low, high = self.min_var, self.max_var
        if training:
            batch = ops.stop_gradient(inputs)
            batch_min = ops.minimum(ops.cast(ops.min(batch), "float32"), 0.0)
            batch_max = ops.maximum(ops.cast(ops.max(batch), "float32"), 0.0)
            # tf.train.assign_moving_average(var, value, decay): var -= (var - value) * (1 - decay)
            low = self.min_var - (self.min_var - batch_min) * (1.0 - self.ema_decay)
            high = self.max_var - (self.max_var - batch_max) * (1.0 - self.ema_decay)
            self.min_var.assign(low)
            self.max_var.assign(high)
        low = ops.stop_gradient(ops.convert_to_tensor(low))
        # an empty range (all-zero activations) would give a zero scale: keep it tiny instead
        high = ops.stop_gradient(ops.maximum(high, low + MIN_WEIGHT_RANGE))
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs, low, high, num_bits=INT8_BITS, narrow_range=False)

    def compute_output_shape(self, input_shape):
        return input_shape

    def initialize_range(self, sample):
        """Set the range to ``[min(sample, 0), max(sample, 0)]`` (``sample``: activations)."""
        sample = np.asarray(sample)
        if sample.size == 0 or not np.all(np.isfinite(sample)):
            raise ValueError(
                f"{self.name}: the calibration activations are empty or hold NaN/Inf.")
        if not self.built:
            self.build()
        self.min_var.assign(min(float(np.min(sample)), 0.0))
        self.max_var.assign(max(float(np.max(sample)), 0.0))

    def get_config(self):
        config = super().get_config()
        config["ema_decay"] = self.ema_decay
        return config


def is_int8_quantizer(quantizer):
    """True for this module's 8-bit quantizers (they have no temperature, scales or levels)."""
    return isinstance(quantizer, (Int8WeightQuantizer, Int8OutputQuantizer))

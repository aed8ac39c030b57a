"""``QNetsQuantizer``: the Keras 3 layer that owns one quantized tensor's scales, thresholds and T.

Forward (see :mod:`tf_qnets.keras3.staircase` for the gradients)::

    training, T < hard_forward_from:  y = alpha * ( sum_i s_i sigmoid(clip(T (beta x - b_i), -10, 10)) - o )
    training, T >= hard_forward_from,
    and inference:                    y = alpha * ( sum_i s_i [beta x > b_i] - o )     = alpha * level

From ``T = hard_forward_from`` (default ``HARD_FORWARD_TEMPERATURE`` = 100, where the
default temperature schedule ends) the training forward is the hard staircase and only
the backward is the soft form's (a straight-through estimator), so the end of training
trains exactly the network that ``evaluate`` measures.

Variables (one scalar each per quantized tensor, the paper's layer-wise setting):

* ``alpha`` (trainable): the output scale, the deployed step size;
* ``beta`` (trainable): the input scale;
* ``thresholds`` (``[n]``; trainable only with ``train_thresholds=True``, as in the paper);
* ``temperature`` (not trainable): set by :class:`tf_qnets.keras3.schedule.TemperatureScheduler`.
  Being a variable, it is saved with the model, and assigning it does not retrace or
  recompile the training step (under JAX it is part of the state the step receives);
* ``gap`` (not trainable, not used by the forward): the quantization gap of the latest
  training call, ``mean |soft - hard| / |alpha|`` on a sample (:mod:`tf_qnets.keras3.gap`).

Example::

    >>> import numpy as np
    >>> from tf_qnets.keras3.quantizer import QNetsQuantizer
    >>> q = QNetsQuantizer((0, 1, 2, 3), role="activations")
    >>> y = q(np.array([0.2, 1.7, 9.0], "float32"), training=False)   # alpha = beta = 1
    >>> [float(v) for v in y]
    [0.0, 2.0, 3.0]

Reference: Yang et al., "Quantization Networks", CVPR 2019 (arXiv:1911.09464).
"""


import keras
import numpy as np

from tf_qnets.core.schedule import HARD_FORWARD_TEMPERATURE  # noqa: F401  (re-exported)
from tf_qnets.core.plan import ROLES, check_quantizer_options  # noqa: F401  (ROLES re-exported)
from tf_qnets.keras3.gap import gap_sample, gap_value
from tf_qnets.keras3.staircase import hard_staircase, soft_staircase

__all__ = ["HARD_FORWARD_TEMPERATURE", "QNetsQuantizer", "ROLES"]



@keras.saving.register_keras_serializable(package="tf_qnets")
class QNetsQuantizer(keras.layers.Layer):
    """Sum-of-sigmoids quantizer of one tensor (a kernel or an activation).

    Args:
      levels: sorted distinct integer levels, e.g. ``(-4, -2, -1, 0, 1, 2, 4)``, or a
        :class:`tf_qnets.core.levels.LevelSet`.
      role: ``"weights"`` or ``"activations"`` (the temperature schedule caps weight
        temperatures separately; the initialisation reads kernels or calibration data).
      gradient: ``"exact"``, ``"wide"`` or ``"smooth"`` (see :mod:`tf_qnets.keras3.staircase`).
      train_thresholds: learn the thresholds too (the paper freezes them).
      hard_forward_from: the temperature from which training uses the hard forward
        (default 100), or None for the soft forward at every temperature.
      **kwargs: Keras layer arguments (``name``, ``dtype``).

    Call ``q(x, training=...)``: the soft staircase when ``training`` is true, else the hard one.
    """

    def __init__(self, levels, role="weights", gradient="exact", train_thresholds=False,
                 hard_forward_from=HARD_FORWARD_TEMPERATURE, **kwargs):
        super().__init__(**kwargs)
        self.levels, self.hard_forward_from = check_quantizer_options(
            levels, role, gradient, train_thresholds, hard_forward_from)
        self.role = role
        self.gradient = gradient
        self.train_thresholds = train_thresholds
        # Calibration reads the unquantized tensor with this switched on (eager calls only).
        self.bypass = False

    def build(self, input_shape=None):
        self.alpha = self.add_weight(name="alpha", shape=(), initializer="ones", trainable=True)
        self.beta = self.add_weight(name="beta", shape=(), initializer="ones", trainable=True)
        initial = np.asarray(self.levels.uniform_thresholds(), "float32")
        self.thresholds = self.add_weight(
            name="thresholds", shape=(self.levels.num_steps,),
            initializer=keras.initializers.Constant(initial), trainable=self.train_thresholds)
        self.temperature = self.add_weight(
            name="temperature", shape=(), initializer="ones", trainable=False)
        self.gap = self.add_weight(name="gap", shape=(), initializer="zeros", trainable=False)
        self.built = True

    def call(self, inputs, training=None):
        if self.bypass:
            return inputs
        if training:
            outputs = soft_staircase(inputs, self.alpha, self.beta, self.thresholds,
                                     self.temperature, self.levels, gradient=self.gradient,
                                     train_thresholds=self.train_thresholds,
                                     hard_forward_from=self.hard_forward_from)
            self._record_gap(inputs, outputs)
            return outputs
        return hard_staircase(inputs, self.alpha, self.beta, self.thresholds, self.levels)

    def _record_gap(self, inputs, outputs):
        """Assign the gap of this call (:mod:`tf_qnets.keras3.gap`) to ``self.gap``."""
        hard = hard_staircase(gap_sample(inputs, self.role), self.alpha, self.beta,
                              self.thresholds, self.levels)
        self.gap.assign(gap_value(gap_sample(outputs, self.role), hard, self.alpha))

    def compute_output_shape(self, input_shape):
        return input_shape

    def assign(self, alpha, beta, thresholds):
        """Set the scales and thresholds (the initialisation's values)."""
        thresholds = np.asarray(thresholds, "float32").reshape(self.levels.num_steps)
        self.alpha.assign(float(alpha))
        self.beta.assign(float(beta))
        self.thresholds.assign(thresholds)

    def get_config(self):
        config = super().get_config()
        config.update({
            "levels": list(self.levels.levels),
            "role": self.role,
            "gradient": self.gradient,
            "train_thresholds": self.train_thresholds,
            "hard_forward_from": self.hard_forward_from,
        })
        return config

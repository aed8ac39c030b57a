"""The tfmot ``Quantizer`` of Quantization Networks: learned scales, thresholds and a temperature.

Forward (see :mod:`tf_qnets.tf.staircase` for the gradients)::

    training, T < 100:  y = alpha * ( sum_i s_i * sigmoid(clip(T * (beta * x - b_i), -10, 10)) - o )
    training, T >= 100,
    and inference:      y = alpha * ( sum_i s_i * [beta * x > b_i] - o )     = alpha * level

From ``T = HARD_FORWARD_TEMPERATURE`` (100, where the default temperature schedule
ends) the training forward is the hard staircase itself and only the backward is the
soft form's (a straight-through estimator): the last phase of training then trains
exactly the network that ``evaluate`` measures and the exported file computes. At
T = 100 the soft staircase still differs from the hard one within ``0.1 / beta`` of
every threshold, enough to cost points at 2 bits (docs/train.md).

Variables, created on the wrapping layer by :meth:`QNetsQuantizer.build`
(one scalar each per quantized tensor, as in the paper's layer-wise setting):

* ``alpha`` (trainable): output scale; the deployed step size.
* ``beta`` (trainable): input scale.
* ``thresholds`` (``[n]``; frozen unless ``train_thresholds=True``, as in the paper).
* ``temperature`` (not trainable): set by :class:`tf_qnets.TemperatureScheduler`;
  being a variable it is saved with the model and changing it does not retrace.

Each training call also records the quantization gap (:mod:`tf_qnets.keras2.gap`: the mean
``|soft - hard| / alpha`` on a sample of at most 4096 elements) in ``quantizer.gap``, a
variable that is neither trained nor saved.

Example::

    >>> from tf_qnets import QNetsQuantizer
    >>> q = QNetsQuantizer(levels=(-1, 0, 1), role="weights")
    >>> q.levels.steps, q.levels.offset
    ((1, 1), 1)

Reference: Yang et al., "Quantization Networks", CVPR 2019 (arXiv:1911.09464).
"""

import contextlib

from tf_qnets.core.gap import GAP_SAMPLE_SIZE
from tf_qnets.core.schedule import HARD_FORWARD_TEMPERATURE  # noqa: F401  (re-exported)
from tf_qnets.keras2 import tfmot

from tf_qnets.keras2.backend import keras, tf
from tf_qnets.keras2.gap import gap_sample, gap_variable, record_gap, records_gap_now
from tf_qnets.core.plan import ROLES, check_quantizer_options  # noqa: F401  (ROLES re-exported)
from tf_qnets.tf.staircase import (
    IMPLEMENTATIONS,
    hard_staircase,
    hard_staircase_compiled,
    hard_staircase_kernel,
    run_padded_to_bucket,
    soft_staircase,
)

__all__ = ["HARD_FORWARD_TEMPERATURE", "QNetsQuantizer", "ROLES"]




_GRAPH_HARD = {}


def _graph_hard_staircase(levels, dtype):
    """:func:`hard_staircase` for ``levels`` as one traced function of any input shape.

    In a graph (the functional model that quantize_apply builds, evaluate, predict) the hard
    staircase was inlined op by op: about a hundred ops (a tf.cond over two branches) built
    again for every quantizer, most of quantize_apply's time on ResNet50 (~100 ms per
    quantizer). Traced once per level set and dtype, each quantizer adds one call op; the
    ops inside are the same (plain TensorFlow, not XLA: the values are those of the inlined
    form, and Grappler inlines the call when the graph runs). Its output keeps ``x``'s static
    shape (the signature leaves the shape open).
    """
    key = (levels.levels, tf.as_dtype(dtype).name)
    if key not in _GRAPH_HARD:
        function = tf.function(
            lambda x, alpha, beta, thresholds: hard_staircase(x, alpha, beta, thresholds, levels),
            autograph=False,
            input_signature=[tf.TensorSpec(None, dtype), tf.TensorSpec([], dtype),
                             tf.TensorSpec([], dtype), tf.TensorSpec([levels.num_steps], dtype)])

        def call(x, alpha, beta, thresholds):
            y = function(x, alpha, beta, thresholds)
            y.set_shape(x.shape)
            return y

        _GRAPH_HARD[key] = call
    return _GRAPH_HARD[key]


@keras.utils.register_keras_serializable(package="tf_qnets")
class QNetsQuantizer(tfmot.Quantizer):
    """Sum-of-sigmoids quantizer for one tensor (a kernel or an activation).

    Args:
      levels: sorted distinct integer levels, e.g. ``(-4, -2, -1, 0, 1, 2, 4)``.
      role: ``"weights"`` or ``"activations"`` (used by the temperature schedule and
        the initialisation).
      gradient: ``"exact"`` (derivative of the soft form), ``"wide"`` (the authors'
        binary-weight backward: sigmoid derivative at T = 1, times T) or ``"smooth"``
        (the derivative of the soft form at temperature ``min(T, 2)``).
      train_thresholds: learn the thresholds ``b_i`` too (the paper freezes them).
      implementation: ``"xla"`` (default, CPU and GPU: the soft staircase's elementwise
        passes are XLA-compiled on their own, the model's other layers keep their regular
        kernels; works with or without ``jit_compile`` and under ``MirroredStrategy``) or
        ``"graph"`` (plain TensorFlow ops, for platforms without XLA).
      hard_forward_from: the temperature from which on training uses the hard staircase
        in the forward pass (default ``HARD_FORWARD_TEMPERATURE``, 100), or None for the
        soft forward at every temperature (the paper's form).
    """

    def __init__(self, levels, role="weights", gradient="exact", train_thresholds=False,
                 implementation="xla", hard_forward_from=HARD_FORWARD_TEMPERATURE):
        self.levels, self.hard_forward_from = check_quantizer_options(
            levels, role, gradient, train_thresholds, hard_forward_from)
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"`implementation` must be one of {IMPLEMENTATIONS}, got {implementation!r}.")
        self.implementation = implementation
        self.role = role
        self.gradient = gradient
        self.train_thresholds = train_thresholds
        # Calibration reads the unquantized tensor by switching this on (eager only).
        self.bypass = False
        # Calibration sets a dict here (eager only, weights unchanged meanwhile): the hard
        # staircase of each input tensor (a kernel variable) is computed once and reused for
        # every calibration batch instead of once per batch (see hard_outputs_cached).
        self.hard_cache = None
        # The latest quantization gap (tf_qnets.keras2.gap), created by build().
        self.gap = None

    def build(self, tensor_shape, name, layer):
        initial = self.levels.uniform_thresholds()
        self.gap = gap_variable(f"{layer.name}_{name}")
        return {
            "alpha": layer.add_weight(
                f"{name}_alpha", shape=(), initializer=keras.initializers.Constant(1.0),
                trainable=True),
            "beta": layer.add_weight(
                f"{name}_beta", shape=(), initializer=keras.initializers.Constant(1.0),
                trainable=True),
            "thresholds": layer.add_weight(
                f"{name}_thresholds", shape=(self.levels.num_steps,),
                initializer=keras.initializers.Constant(initial.tolist()),
                trainable=self.train_thresholds),
            "temperature": layer.add_weight(
                f"{name}_temperature", shape=(), initializer=keras.initializers.Constant(1.0),
                trainable=False),
        }

    # Keras converts a layer's call with AutoGraph when it builds a functional model or a
    # train/predict function, and AutoGraph would convert every function called from here
    # (the staircases: dozens of small helpers). All control flow below is on Python
    # values (tf.cond / tf.while_loop where it depends on tensors), so the ops are the same
    # without the conversion, and building the wrapped model is faster (ResNet50 at 32x32:
    # tfmot's quantize_apply 14.6 -> 12.4 s; the same ops, weights and outputs).
    @tf.autograph.experimental.do_not_convert
    def __call__(self, inputs, training, weights, **kwargs):
        if self.bypass:
            return inputs
        alpha = tf.cast(weights["alpha"], inputs.dtype)
        beta = tf.cast(weights["beta"], inputs.dtype)
        thresholds = tf.cast(weights["thresholds"], inputs.dtype)
        if training:
            temperature = tf.cast(weights["temperature"], inputs.dtype)

            def staircase(values):
                return soft_staircase(values, alpha, beta, thresholds, temperature, self.levels,
                                      gradient=self.gradient,
                                      train_thresholds=self.train_thresholds,
                                      implementation=self.implementation,
                                      hard_forward_from=self.hard_forward_from)

            if self.role == "weights" and self.implementation == "xla":
                # a network's kernels have dozens of shapes: padded to a few sizes, they
                # share the XLA programs the first training step compiles
                outputs = run_padded_to_bucket(staircase, inputs)
            else:
                outputs = staircase(inputs)
            if self.gap is not None and records_gap_now():
                outputs = self._with_gap_recorded(inputs, outputs, alpha, beta, thresholds)
            return outputs
        if tf.executing_eagerly():
            # eager (calibration walks the model a layer at a time): one compiled pass
            if self.hard_cache is not None:
                key = id(inputs)
                if key not in self.hard_cache:
                    # the input is kept with its output, so that its id cannot be reused
                    self.hard_cache[key] = (inputs, hard_staircase_compiled(
                        inputs, alpha, beta, thresholds, self.levels, self.implementation))
                return self.hard_cache[key][1]
            return hard_staircase_compiled(inputs, alpha, beta, thresholds, self.levels,
                                           self.implementation)
        return _graph_hard_staircase(self.levels, inputs.dtype)(inputs, alpha, beta, thresholds)

    @contextlib.contextmanager
    def hard_outputs_cached(self):
        """Within the block, eager inference calls compute the hard staircase of each input
        object once and return that tensor again for the same object.

        For a weight quantizer during calibration: its input is the layer's kernel variable,
        the same object on every call, and neither the kernel nor the quantizer's variables
        change while the activations are calibrated, so the staircase of the kernel is the
        same for every batch (ResNet50 at 224: 8 batches, each kernel quantized once
        instead of 8 times). Not for tensors or variables that change inside the block.
        """
        self.hard_cache = {}
        try:
            yield self
        finally:
            self.hard_cache = None

    def _with_gap_recorded(self, inputs, outputs, alpha, beta, thresholds):
        """Record the gap on a sample (:mod:`tf_qnets.keras2.gap`); return ``outputs`` unchanged,
        ordered after the record so that graph-mode training runs it (no gradient flows
        into the record: it only feeds a variable assignment)."""
        kernel = hard_staircase_kernel(self.levels, self.implementation)
        # every sample padded to the largest size: one compiled program per level set
        hard = run_padded_to_bucket(lambda values: kernel(values, alpha, beta, thresholds),
                                    gap_sample(inputs, self.role), buckets=(GAP_SAMPLE_SIZE,))
        recorded = record_gap(self.gap, gap_sample(outputs, self.role), hard, alpha)
        with tf.control_dependencies([recorded]):
            return tf.identity(outputs)

    def get_config(self):
        return {
            "levels": list(self.levels.levels),
            "role": self.role,
            "gradient": self.gradient,
            "train_thresholds": self.train_thresholds,
            "implementation": self.implementation,
            "hard_forward_from": self.hard_forward_from,
        }

    def __eq__(self, other):
        return isinstance(other, QNetsQuantizer) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return (f"QNetsQuantizer(levels={self.levels.levels}, role={self.role!r}, "
                f"gradient={self.gradient!r}, train_thresholds={self.train_thresholds}, "
                f"implementation={self.implementation!r}, "
                f"hard_forward_from={self.hard_forward_from!r})")

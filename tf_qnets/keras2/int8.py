"""Standard int8 quantizers for layers kept out of the low-bit scheme (``first_last="int8"``).

An int8 device computes the first and last layers with affine 8-bit quantization:
``q = round(x / scale) + zero_point``. tfmot's FakeQuant quantizers simulate exactly
that; these thin subclasses add what tf_qnets needs: a calibration bypass and a
range initialised from data instead of tfmot's default [-6, 6].
"""

import numpy as np
from tf_qnets.keras2 import tfmot

from tf_qnets.keras2.backend import keras

__all__ = ["Int8WeightQuantizer", "Int8OutputQuantizer", "initialize_int8_weight_range"]


@keras.utils.register_keras_serializable(package="tf_qnets")
class Int8WeightQuantizer(tfmot.LastValueQuantizer):
    """Symmetric, narrow-range 8-bit kernel FakeQuant (per output channel unless ``per_axis=False``)."""

    def __init__(self, per_axis=True, num_bits=8, symmetric=True, narrow_range=True):
        super().__init__(num_bits=num_bits, per_axis=per_axis, symmetric=symmetric,
                         narrow_range=narrow_range)


@keras.utils.register_keras_serializable(package="tf_qnets")
class Int8OutputQuantizer(tfmot.MovingAverageQuantizer):
    """Asymmetric 8-bit FakeQuant of a layer output with a moving-average range."""

    def __init__(self, num_bits=8, per_axis=False, symmetric=False, narrow_range=False):
        super().__init__(num_bits=num_bits, per_axis=per_axis, symmetric=symmetric,
                         narrow_range=narrow_range)
        self.bypass = False

    def __call__(self, inputs, training, weights, **kwargs):
        if self.bypass:
            return inputs
        return super().__call__(inputs, training, weights, **kwargs)

    def initialize_range(self, variables, sample):
        """Set the range to [min(sample, 0), max(sample, 0)]."""
        variables["min_var"].assign(min(float(np.min(sample)), 0.0))
        variables["max_var"].assign(max(float(np.max(sample)), 0.0))


def initialize_int8_weight_range(quantizer, variables, kernel):
    """Set a LastValue quantizer's range to the kernel's (per-channel) +-max|w|."""
    kernel = np.asarray(kernel)
    if quantizer.per_axis:
        bound = np.max(np.abs(kernel.reshape(-1, kernel.shape[-1])), axis=0)
    else:
        bound = np.max(np.abs(kernel))
    bound = np.maximum(bound, 1e-8).astype(np.float32)
    variables["min_var"].assign(-bound)
    variables["max_var"].assign(bound)

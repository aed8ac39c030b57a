"""``QNetsWrapper``: tfmot's QuantizeWrapperV2 with a weight order that survives saving.

tfmot's wrapper lists its weights in a different order after a fresh build (the
inner layer was already built, so its kernel comes first) than after
``from_config`` (the inner layer is built inside the wrapper's ``build``, after
the quantizer variables). With quantizers that own trainable variables, as ours
do, ``.h5`` and ``.keras`` reloads then assign values to the wrong variables.
This wrapper builds the inner layer first in both cases, so the order is always:
inner layer weights, then quantizer variables; and in the ``.keras`` format it
saves only its own variables (the inner layer saves its weights itself).
"""

from tf_qnets.keras2 import tfmot
from tf_qnets.keras2.backend import keras

__all__ = ["QNetsWrapper", "quantizer_states", "unwrapped"]


@keras.utils.register_keras_serializable(package="tf_qnets")
class QNetsWrapper(tfmot.QuantizeWrapperV2):
    """Quantize-aware wrapper of one layer (see :class:`tf_qnets.QNetsQuantizeConfig`)."""

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
            self.layer.built = True
        super().build(input_shape)

    def _own_variables(self):
        """The wrapper's own variables (not the inner layer's), in creation order."""
        inner = {id(v) for v in self.layer.weights}
        seen, own = set(), []
        for variable in self._trainable_weights + self._non_trainable_weights:
            if id(variable) in inner or id(variable) in seen:
                continue
            seen.add(id(variable))
            own.append(variable)
        return own

    def save_own_variables(self, store):
        # The inner layer saves its own weights as a child; save only ours, in a fixed order.
        for index, variable in enumerate(self._own_variables()):
            store[str(index)] = variable.numpy()

    def load_own_variables(self, store):
        own = self._own_variables()
        if len(store.keys()) != len(own):
            raise ValueError(
                f"Layer {self.name!r}: the file holds {len(store.keys())} quantizer variables but "
                f"the layer has {len(own)} ({[v.name for v in own]}); was it saved by another "
                "version of tf_qnets or with different quantization settings?")
        for index, variable in enumerate(own):
            variable.assign(store[str(index)])

    def quantizer_states(self):
        """``[(role, tensor_name, quantizer, variables)]`` for this layer's quantizers.

        ``tensor_name`` is ``"kernel"``-like for weights and ``"output"`` for the output.
        """
        states = []
        for weight, quantizer, variables in tfmot.weight_quantizer_variables(self):
            states.append(("weights", tfmot.weight_name(self, weight), quantizer, variables))
        for quantizer in tfmot.output_quantizers(self):
            states.append(("output", "output", quantizer, tfmot.output_quantizer_variables(self)))
        return states


def quantizer_states(model):
    """Every quantizer of a model built by :func:`tf_qnets.quantize_model`.

    Returns ``[(wrapper, role, tensor_name, quantizer, variables)]`` in layer order.
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, QNetsWrapper):
            for role, tensor_name, quantizer, variables in layer.quantizer_states():
                found.append((layer, role, tensor_name, quantizer, variables))
    return found


def unwrapped(layer):
    """The layer a :class:`QNetsWrapper` wraps, else ``layer`` itself."""
    return layer.layer if isinstance(layer, QNetsWrapper) else layer

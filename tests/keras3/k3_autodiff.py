"""Gradients through the active Keras backend, for tests. Imports jax or tensorflow lazily:
only the one that is the backend."""

import keras
import numpy as np

_COMPILED = {}


def value_and_gradients(fn, upstream, *args, key=None):
    """``(fn(*args), [dL/darg for arg in args])`` with ``L = sum(upstream * fn(*args))``.

    ``upstream`` and ``args`` are numpy float32 arrays; results are numpy arrays. Under JAX
    the computation is jit-compiled once per ``key`` (give one when calling with many
    values: eager JAX dispatches op by op); under TensorFlow it runs eagerly.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        compiled = _COMPILED.get(key) if key is not None else None
        if compiled is None:
            def loss(upstream, *a):
                value = fn(*a)
                return keras.ops.sum(value * upstream), value

            compiled = jax.jit(jax.value_and_grad(
                loss, argnums=tuple(range(1, len(args) + 1)), has_aux=True))
            if key is not None:
                _COMPILED[key] = compiled
        (_, value), grads = compiled(upstream, *args)
        return np.asarray(value), [np.asarray(g) for g in grads]
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            for t in tensors:
                tape.watch(t)
            value = fn(*tensors)
            total = tf.reduce_sum(value * upstream)
        grads = tape.gradient(total, tensors)
        return value.numpy(), [np.zeros_like(a) if g is None else g.numpy()
                               for a, g in zip(args, grads)]
    raise NotImplementedError(f"tests support the jax and tensorflow backends, not {backend!r}")

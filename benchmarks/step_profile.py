"""Where a quantized training step's time goes, beyond the float step.

Two views, both used by ``benchmarks/train_speed.py`` (``--profile``, on by default):

* **The TensorFlow profiler** (``tf.profiler.experimental``) over a few training steps of
  a model: the time of every executed op, summed by kind (convolutions, the other float
  layers, the quantizers' XLA kernels, the scale-gradient dot products, the rest) in
  *thread-milliseconds per step*: the two compute threads' busy time added up, so a
  step that keeps both threads busy takes about half of it in wall time.
* **The activation quantizers alone**, on the model's own activations: the forward
  kernel, the whole backward (kernel and the two scale-gradient dot products
  ``sum(upstream * y)`` and ``sum(x * dL/dx)``) and the dot products by themselves, in
  milliseconds of wall time per step. The profiler cannot tell the forward kernel from
  the backward one (XLA runs both as anonymous executables), hence this split.

Run alone::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/step_profile.py
"""

import collections
import statistics
import time

from profiler_space import profiled_space

# (label, test on the op type) in the order of the report; the first match wins.
CATEGORIES = (
    ("convolutions (forward and backward)", lambda t: "Conv2D" in t),
    ("BatchNorm, ReLU, pooling (forward and backward)",
     lambda t: any(k in t for k in ("BatchNorm", "Relu", "MaxPool"))),
    ("quantizer kernels (XLA; forward and backward)", lambda t: t == "XLA"),
    ("scale-gradient dot products (Mul, Sum)", lambda t: t in ("Mul", "Sum")),
    ("everything else (dense layer, optimizer, loss, control flow)", lambda t: True),
)
_XLA_EVENT = "CpuExecutable::ExecuteAsyncOnStream"


def op_type(event_name):
    """The op type of a profiler event (``"name:Type"``), ``"XLA"`` for an XLA executable,
    ``None`` for the executor's own bookkeeping events."""
    if event_name == _XLA_EVENT:
        return "XLA"
    if ":" in event_name and "::" not in event_name:
        return event_name.rsplit(":", 1)[1]
    return None


def category(kind):
    return next(label for label, test in CATEGORIES if test(kind))


def profile_step(step, steps=5):
    """``{category: thread-ms per step}`` over ``steps`` calls of ``step`` (warmed up)."""
    space = profiled_space(lambda: [step() for _ in range(steps)])
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_"):
                continue    # the Python thread's events enclose the compute threads' ones
            for event in line.events:
                kind = op_type(plane.event_metadata[event.metadata_id].name)
                if kind is not None:
                    totals[category(kind)] += event.duration_ps / 1e9 / steps
    return {label: totals.get(label, 0.0) for label, _ in CATEGORIES}


def _median_ms(function, rounds):
    for _ in range(2):
        function()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def time_activation_quantizers(model, x, rounds=9):
    """Forward, backward and dot-product times (ms per step) of ``model``'s activation
    quantizers on its own activations for the batch ``x``, each pass timed alone."""
    from tf_qnets.keras2.backend import keras, tf
    from tf_qnets.tf.staircase import _dot, soft_staircase
    from tf_qnets.keras2.wrapper import quantizer_states

    found = [(layer, quantizer, variables) for layer, role, _, quantizer, variables
             in quantizer_states(model) if quantizer.role == "activations"]
    if not found:
        return None
    # Each activation quantizer sits on its wrapped layer's output (a ReLU here).
    probe = keras.Model(model.inputs, [layer.layer(layer.input) for layer, _, _ in found])
    inputs = probe(x, training=False)
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    upstream = [tf.random.stateless_normal(tf.shape(a), seed=[0, i]) for i, a in enumerate(inputs)]

    def quantize(a, quantizer, v):
        return soft_staircase(a, v["alpha"], v["beta"], v["thresholds"], v["temperature"],
                              quantizer.levels, gradient=quantizer.gradient)

    @tf.function
    def forward():
        return [quantize(a, q, v) for a, (_, q, v) in zip(inputs, found)]

    @tf.function
    def forward_backward():
        out = []
        for a, u, (_, q, v) in zip(inputs, upstream, found):
            with tf.GradientTape() as tape:
                tape.watch(a)
                y = quantize(a, q, v)
            out += tape.gradient(y, [a, v["alpha"], v["beta"]], output_gradients=u)
        return out

    @tf.function
    def dots():
        return [_dot(u, a) + _dot(a, u) for a, u in zip(inputs, upstream)]

    def run(function):
        return lambda: [t.numpy() for t in function()]

    forward_ms = _median_ms(run(forward), rounds)
    both_ms = _median_ms(run(forward_backward), rounds)
    dots_ms = _median_ms(run(dots), rounds)
    return {"forward kernel": forward_ms,
            "backward kernel": max(both_ms - forward_ms - dots_ms, 0.0),
            "scale-gradient dot products": dots_ms,
            "elements": sum(int(tf.size(a)) for a in inputs)}


def profile_report(float_profile, quantized_profile, quantized_name, kernels):
    """Markdown: the profiler's categories side by side, then the quantizers alone."""
    lines = [f"| op kind | float (thread-ms / step) | {quantized_name} (thread-ms / step) "
             "| difference |", "|---|---|---|---|"]
    for label, _ in CATEGORIES:
        f, q = float_profile[label], quantized_profile[label]
        lines.append(f"| {label} | {f:.1f} | {q:.1f} | {q - f:+.1f} |")
    f, q = sum(float_profile.values()), sum(quantized_profile.values())
    lines.append(f"| **all ops** | {f:.1f} | {q:.1f} | {q - f:+.1f} |")
    if kernels:
        lines += ["", f"{quantized_name}'s activation quantizers alone ({kernels['elements']:,} "
                  "elements per step; wall ms per step, each pass timed by itself):", "",
                  "| pass | ms / step |", "|---|---|"]
        lines += [f"| {name} | {kernels[name]:.1f} |" for name in
                  ("forward kernel", "backward kernel", "scale-gradient dot products")]
    return "\n".join(lines)


def main():
    import sys
    import os

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import train_speed

    x, _ = train_speed._data()
    profiles = {}
    for name in ("float", "W3A3"):
        model = train_speed.build(name, False, 10.0)
        step = train_speed.training_step(model)
        for _ in range(3):
            step()
        profiles[name] = profile_step(step)
    kernels = time_activation_quantizers(model, x)
    print(profile_report(profiles["float"], profiles["W3A3"], "W3A3", kernels))


if __name__ == "__main__":
    main()

"""Training-step time of the Keras 3 path: float vs tf_qnets W3A<b>, under JAX and TensorFlow.

The model and batch are those of ``benchmarks/train_speed.py`` (the Keras 2 benchmark): a
Fashion-MNIST-shaped CNN (28x28x1 inputs, three Conv-BN-ReLU blocks, two max-pools,
Dense(10)), SGD with momentum, batch 128, random data. Configurations (``--configs``):

* ``float``: the float Keras 3 model;
* ``W3A<b>``: ``tf_qnets.quantize_model(model, w_bits=3, a_bits=b)`` with no other option,
  at temperature ``--temperature`` (default 10, the default schedule's lowest);
* ``W3``: 3-bit weights, float activations.

Every model is compiled with ``jit_compile=True`` (XLA) and trained with plain ``fit``, as a
user trains it. One process per backend (the Keras backend is fixed per process). In each,
every configuration is built and warmed up, then ``--rounds`` rounds each run one ``fit``
epoch of ``--steps`` batches of every configuration in turn (interleaved, so that the load
of a shared machine hits all of them alike). A step is an epoch's wall time over its
batches (``fit``'s per-epoch work, callbacks and the data adapter, included); the table gives
the median over the rounds and its ratio to the float step of the same backend, and beside it
the median batch alone (each timed by a callback from its start to its end).

Under TensorFlow the epochs are fed a ``tf.data.Dataset`` of the same batches with
``options.autotune.enabled = False`` (``--tf-data-autotune`` feeds the arrays instead, as
``fit(x, y)`` does): with TensorFlow 2.21 on the CPU, deleting an autotuned iterator (which
``fit`` does at the end of each epoch) often waits until the autotuner's next wake-up, which
comes at 10 ms * (2^k - 1) after the iterator was made (2.55 s, 5.11 s, 10.23 s, ...). An
epoch of 16 batches that took 2.6 s then took 5.2 s (the Keras 3 TensorFlow rows once sat
at about 322 ms per batch whatever the model computed): a TensorFlow cost, not the model's.

Targets (issue 17, JAX backend): W3A3 step <= 1.5x float step; W3A8 step <= 1.2x W3A2 step.

    python benchmarks/keras3_train_speed.py                        # JAX and TensorFlow
    python benchmarks/keras3_train_speed.py --backends jax --rounds 5

Writes its table between the ``keras3-train-speed`` markers of ``docs/benchmarks.md``
(``--markdown ''`` to skip).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from train_speed import float_model  # noqa: E402  (the Keras 2 benchmark's CNN, any keras module)

BLOCK = "keras3-train-speed"
BACKENDS = ("jax", "tensorflow")
DEFAULT_CONFIGS = ("float", "W3", "W3A2", "W3A3", "W3A8")
# (label, numerator, denominator, bound, backend the target is set for)
TARGETS = (
    ("W3A3 / float", "W3A3", "float", 1.5, "jax"),
    ("W3A8 / W3A2", "W3A8", "W3A2", 1.2, "jax"),
)


def parse_config(name):
    """``"W3A8"`` -> ``(3, 8)``, ``"W3"`` -> ``(3, None)``, ``"float"`` -> ``None``."""
    if name == "float":
        return None
    if not name.startswith("W"):
        raise ValueError(f"configuration {name!r}: expected 'float', 'W<bits>' or 'W<bits>A<bits>'")
    w_bits, _, a_bits = name[1:].partition("A")
    try:
        return int(w_bits), (int(a_bits) if a_bits else None)
    except ValueError:
        raise ValueError(f"configuration {name!r}: expected 'float', 'W<bits>' or "
                         f"'W<bits>A<bits>'") from None


def build(name, temperature, calibration):
    """A compiled Keras 3 model for configuration ``name``."""
    import keras

    import tf_qnets

    keras.utils.set_random_seed(0)
    model = float_model(keras)
    bits = parse_config(name)
    if bits is not None:
        w_bits, a_bits = bits
        model = tf_qnets.quantize_model(model, w_bits=w_bits, a_bits=a_bits,
                                        calibration_data=calibration,
                                        verbose=0)
        tf_qnets.set_temperature(model, weights=temperature,
                                 activations=temperature if a_bits else None)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    return model


def epoch_data(x, y, batch, backend, tf_data_autotune=False):
    """What ``fit`` is given for one epoch under Keras ``backend``: ``{"args", "kwargs"}``.

    The arrays themselves (``fit(x, y, batch_size=batch, shuffle=False)``) under JAX, or under
    TensorFlow with ``tf_data_autotune``; else (TensorFlow) a ``tf.data.Dataset`` of the same
    batches in the same order whose autotuning is off, so that deleting its iterator at the
    end of an epoch does not wait for the autotuner's next wake-up (module docstring).
    """
    if backend != "tensorflow" or tf_data_autotune:
        return {"args": (x, y), "kwargs": {"batch_size": batch, "shuffle": False}}
    return {"args": (untuned_dataset(x, y, batch),),
            "kwargs": {"shuffle": False}}      # (no warning that it is ignored)


def untuned_dataset(x, y, batch):
    """``(x, y)`` in batches of ``batch``, in order, as a ``tf.data.Dataset`` whose autotuning
    is off (also ``benchmarks/fit_teardown.py``'s workaround feed)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).with_options(options)


def time_epochs(builders, x, y, batch, rounds, log=print, batch_times=None,
                tf_data_autotune=False):
    """Median seconds per training step of each model, under the process's Keras backend.

    ``builders``: ``{name: () -> compiled model}``. Each model is built and run for two
    untimed epochs (tracing, compiling, warming up), then ``rounds`` rounds time one ``fit``
    epoch over ``x, y`` of every model in turn; a step is the epoch over its batches.
    ``batch_times`` (a dict, optional) receives each model's timed batches, from the start to
    the end of each batch as ``fit`` reports them (no per-epoch work in between).
    ``tf_data_autotune``: see :func:`epoch_data`.
    """
    import keras

    steps = len(x) // batch

    class BatchTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds, self._start = [], None

        def on_train_batch_begin(self, index, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, index, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    data = epoch_data(x[:steps * batch], y[:steps * batch], batch, keras.backend.backend(),
                      tf_data_autotune)

    def epoch(model, timer=None):
        start = time.perf_counter()
        model.fit(*data["args"], epochs=1, verbose=0, callbacks=[timer] if timer else None,
                  **data["kwargs"])
        return (time.perf_counter() - start) / steps

    models = {}
    for name, builder in builders.items():
        start = time.perf_counter()
        models[name] = builder()
        epoch(models[name])          # traces and compiles
        epoch(models[name])
        log(f"  built, compiled and warmed up {name} ({time.perf_counter() - start:.1f} s)")
    times = {name: [] for name in models}
    timers = {name: BatchTimer() for name in models}
    for r in range(rounds):
        for name, model in models.items():
            times[name].append(epoch(model, timers[name]))
        log(f"  round {r + 1}/{rounds}")
    if batch_times is not None:
        for name, timer in timers.items():
            batch_times.setdefault(name, []).extend(timer.seconds)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(names, rounds, steps, batch, temperature, log=print, batch_times=None,
            tf_data_autotune=False):
    """Median step seconds of the configurations ``names`` on ``steps`` random batches
    (``batch_times``, ``tf_data_autotune``: see :func:`time_epochs`)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((steps * batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, steps * batch)
    builders = {name: (lambda name=name: build(name, temperature, x[:batch])) for name in names}
    return time_epochs(builders, x, y, batch, rounds, log, batch_times, tf_data_autotune)


def child(args):
    """Runs in a process with ``KERAS_BACKEND`` set: prints one ``RESULT`` JSON line."""
    import keras

    names = args.configs.split(",")
    batches = {}
    medians = measure(names, args.rounds, args.steps, args.batch_size, args.temperature,
                      log=lambda text: print(text, flush=True), batch_times=batches,
                      tf_data_autotune=args.tf_data_autotune)
    batch_medians = {name: statistics.median(values) for name, values in batches.items()}
    for name in names:
        print(f"  {name}: {1000 * medians[name]:.1f} ms/step "
              f"({medians[name] / medians['float']:.2f}x float), batches alone "
              f"{1000 * batch_medians[name]:.1f} ms", flush=True)
    print("RESULT " + json.dumps({"backend": keras.backend.backend(),
                                  "keras": keras.__version__, "seconds": medians,
                                  "batch_seconds": batch_medians}), flush=True)


def run_backend(backend, args):
    command = [sys.executable, os.path.abspath(__file__), "--child", "--configs", args.configs,
               "--rounds", str(args.rounds), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--temperature", str(args.temperature)]
    if args.tf_data_autotune:
        command.append("--tf-data-autotune")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("TF_USE_LEGACY_KERAS", None)
    print(f"{backend}:", flush=True)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    result = None
    for line in process.stdout:
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
        else:
            print(line, end="", flush=True)
    if process.wait() != 0 or result is None:
        raise SystemExit(f"the {backend} run failed (rc {process.returncode}); see its output above")
    return result


def table(results, names):
    lines = ["| backend | config | step (ms) | / float step | batch alone (ms) | / float |",
             "|---|---|---|---|---|---|"]
    for result in results:
        seconds, batches = result["seconds"], result.get("batch_seconds") or {}
        for name in names:
            ratio = seconds[name] / seconds["float"]
            row = f"| {result['backend']} | {name} | {1000 * seconds[name]:.1f} | {ratio:.2f} |"
            if name in batches and "float" in batches:
                row += f" {1000 * batches[name]:.1f} | {batches[name] / batches['float']:.2f} |"
            else:
                row += " - | - |"
            lines.append(row)
    return "\n".join(lines)


def verdicts(results):
    lines = []
    for result in results:
        seconds = result["seconds"]
        for label, numerator, denominator, bound, backend in TARGETS:
            if numerator not in seconds or denominator not in seconds:
                continue
            ratio = seconds[numerator] / seconds[denominator]
            if backend == result["backend"]:
                verdict = "met" if ratio <= bound else "not met"
                lines.append(f"- {result['backend']}: {label} = {ratio:.2f} "
                             f"(target <= {bound}): {verdict}")
            else:
                lines.append(f"- {result['backend']}: {label} = {ratio:.2f}")
    return "\n".join(lines)


def report(results, names, args, command, load):
    return "\n".join([
        f"<!-- {BLOCK}:begin -->",
        "### Keras 3: training step, float vs quantized", "",
        f"Command: `{command}`", "",
        f"Machine: {os.cpu_count()} CPU cores, Python {platform.python_version()}, Keras "
        f"{results[0]['keras']}; load average (1 min) {load[0]:.1f} before, {load[1]:.1f} after. "
        f"Model: the CNN of the Keras 2 table above, batch {args.batch_size}, SGD, "
        f"`jit_compile=True`, tf_qnets at T = {args.temperature:g}. A step is one `fit` epoch of "
        f"{args.steps} batches over {args.steps}; medians of {args.rounds} interleaved epochs. "
        "\"batch alone\": the median of the same epochs' batches, each timed from its start to "
        "its end as `fit` reports them (the epoch's own work outside). "
        + ("Under TensorFlow `fit` is given the arrays (an autotuned `tf.data` pipeline). "
           if args.tf_data_autotune else
           "Under TensorFlow `fit` is given a `tf.data.Dataset` of the same batches with "
           "autotuning off: TensorFlow 2.21 often holds the end of an autotuned epoch until "
           "the autotuner's next wake-up (the script's docstring). ") +
        "The quantized models train their BatchNormalization layers with frozen statistics "
        "(`quantize_model`'s default `batch_norm=\"frozen\"`): no batch moments to compute, "
        "which is why `W3` can step faster than `float`.", "",
        table(results, names), "",
        verdicts(results),
        f"<!-- {BLOCK}:end -->"])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated subset of " + ",".join(BACKENDS))
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help="comma-separated: float, W<bits>, W<bits>A<bits> (float is always run)")
    parser.add_argument("--rounds", type=int, default=7, help="timed epochs per configuration")
    parser.add_argument("--steps", type=int, default=16, help="batches per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=10.0)
    parser.add_argument("--tf-data-autotune", action="store_true",
                        help="under TensorFlow, feed fit the arrays (an autotuned tf.data "
                             "pipeline, as fit(x, y) makes) instead of a dataset whose "
                             "autotuning is off")
    parser.add_argument("--markdown", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown or not backends:
        parser.error(f"--backends: {unknown or 'empty'}; allowed: {', '.join(BACKENDS)}")
    args.backends = backends
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    for name in names:
        try:
            parse_config(name)
        except ValueError as error:
            parser.error(f"--configs: {error}")
    names = ["float"] + [n for n in names if n != "float"]
    args.configs = ",".join(dict.fromkeys(names))
    for option in ("rounds", "steps", "batch_size"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    names = args.configs.split(",")
    command = "python " + " ".join(["benchmarks/keras3_train_speed.py"] + sys.argv[1:])
    load_before = os.getloadavg()[0]
    results = [run_backend(backend, args) for backend in args.backends]
    text = report(results, names, args, command, (load_before, os.getloadavg()[0]))
    print(text)
    if args.markdown:
        import markdown_block

        markdown_block.replace_block(args.markdown, BLOCK, text)
        print(f"wrote the {BLOCK} block of {args.markdown}")


if __name__ == "__main__":
    main()

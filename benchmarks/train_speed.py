"""Training-step time and peak memory: float vs tfmot 8-bit QAT vs tf_qnets at 1..8 bits.

One fixed model and batch: a Fashion-MNIST-shaped CNN (28x28x1 inputs, three
Conv-BN-ReLU blocks, two max-pools, Dense(10)) trained with SGD on random data,
batch 128. Configurations (``--configs``; the default set measures the defaults, and beside
them the options whose cost the documentation states):

* ``float``: the float model;
* ``tfmot8``: ``tfmot.quantization.keras.quantize_model`` (default 8-bit QAT);
* ``W3A<b>``: ``tf_qnets.quantize_model(model, w_bits=3, a_bits=b)`` with no other
  option (3-bit weights {-4..4 pow2}, b-bit activations), b = 1, 2, 3, 4, 8;
* ``W3A<b>-exact``: the same with ``activation_gradient="exact"`` (the default is
  ``"smooth"``);
* ``W3A8-trained``: ``train_thresholds=True``: after the first step the thresholds are no
  longer evenly spaced and take the general (grid) path, with their own gradient;
* ``W3A8-kmeans``: ``thresholds="kmeans"``: k-means activation thresholds, the worst
  case (on ReLU outputs most of them crowd within a fraction of a step of 0);
* ``W<b>``: tf_qnets, b-bit weights, float activations, b = 1, 2, 3, 4, 8;

each compiled with and without ``jit_compile`` (tf_qnets' quantizer math is
XLA-compiled on its own in both cases, its default). tf_qnets quantizers run at
temperature ``--temperature`` (default 10: the lowest temperature of the default
``TemperatureScheduler()``, its first epoch for runs of 10 epochs or more).

Time: every model is built and warmed up in one process, then ``--rounds`` rounds
each run one training step (the compiled train function on a long-lived iterator,
as ``fit`` runs it) of every configuration in turn (interleaved, so that
the load of a shared machine hits all of them alike); the table gives the median
step and its ratio to the median float step (no jit) of the same run.

Memory (``--memory-configs``): one fresh subprocess per configuration with
TensorFlow's BFC allocator on the CPU (``TF_CPU_ALLOCATOR_USE_BFC=true``), two figures:

* **peak live tensors**: what a step needs. Five steps, each under the TensorFlow
  profiler, whose allocation events ``benchmarks/live_tensors.py`` replays: the bytes in
  use when the step began (weights, optimizer state, input buffers) plus the largest sum
  of the sizes of the tensors the step held at once (every activation and gradient kept
  for the backward pass, the ops' temporaries); the median of the five steps.
* **allocator peak**: ``tf.config.experimental.get_memory_info("CPU:0")["peak"]``, reset
  after two warm-up steps and read after three more: BFC's chunks, which are rounded up and
  can be larger than the tensor (a free chunk less than twice the request is not split), so
  this figure adds an internal fragmentation that depends on the order in which the two
  threads happened to run the ops, and moves from process to process.

The process peak RSS (``VmHWM``, whole process incl. the TensorFlow runtime and XLA
compiler) is printed too.

Keras 3 (unless ``--keras3-backends ''``): ``float``, ``W3A3`` and ``W3A8`` (``--keras3-configs``)
of the same CNN built with Keras 3, under JAX and under TensorFlow, each backend in its own
process, measured as ``benchmarks/keras3_train_speed.py`` measures them (XLA, plain ``fit``
epochs interleaved; ratios to the same backend's float step); their table is part of the
section this run writes.

Profile (unless ``--no-profile``): ``benchmarks/step_profile.py`` on the float and
W3A3 steps (no jit): where the time over the float step goes.

Run (about 20 minutes on 2 CPU cores, most of it in the W3A8-trained and -kmeans rows),
writing its section of docs/benchmarks.md::

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/train_speed.py --write docs/benchmarks.md
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

BATCH = 128
A_BITS = (1, 2, 3, 4, 8)
W_BITS = (1, 2, 3, 4, 8)


# What a run measures unless told otherwise: the defaults, and what the targets compare.
DEFAULT_CONFIGS = ("float", "tfmot8", "W3A2", "W3A3", "W3A4", "W3A8", "W3", "W3A3-exact",
                   "W3A8-exact", "W3A8-trained", "W3A8-kmeans")
DEFAULT_MEMORY_CONFIGS = ("float", "tfmot8", "W3A3")
# Targets: (label, numerator, denominator, bound); "fastest of each" over jit on/off.
SPEED_TARGETS = (
    ("W3A3 / float", "W3A3", "float", 1.3),
    ("W3A3 / tfmot 8-bit QAT", "W3A3", "tfmot8", 1.1),
    ("W3A8 / W3A2", "W3A8", "W3A2", 1.1),
)
MEMORY_TARGET = 1.25   # W3A3 / float peak memory
# Options a configuration name's suffix stands for ("W3A3-exact").
SUFFIX_OPTIONS = {"exact": {"activation_gradient": "exact"}, "kmeans": {"thresholds": "kmeans"},
                  "trained": {"train_thresholds": True}}


def config_names():
    names = ["float", "tfmot8"]
    names += [f"W3A{b}" for b in A_BITS]
    names += [f"W{b}" for b in W_BITS]
    names += [f"W3A{b}-exact" for b in A_BITS]
    names += ["W3A8-trained", "W3A8-kmeans"]
    return names


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((BATCH, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int64)
    return x, y


def float_model(keras):
    layers = keras.layers
    inputs = keras.Input((28, 28, 1))
    h = inputs
    for filters, pool in ((32, True), (64, True), (64, False)):
        h = layers.Conv2D(filters, 3, padding="same", use_bias=False)(h)
        h = layers.BatchNormalization()(h)
        h = layers.ReLU()(h)
        if pool:
            h = layers.MaxPooling2D()(h)
    h = layers.Flatten()(h)
    outputs = layers.Dense(10)(h)
    return keras.Model(inputs, outputs)


def build(name, jit, temperature):
    """A compiled model for configuration ``name``."""
    import tf_qnets
    from tf_qnets.keras2.backend import keras

    keras.utils.set_random_seed(0)
    model = float_model(keras)
    x, _ = _data()
    if name == "tfmot8":
        import tensorflow_model_optimization as tfmot

        model = tfmot.quantization.keras.quantize_model(model)
    elif name != "float":
        bits, _, suffix = name.partition("-")   # "W3A3-exact": activation_gradient="exact"
        w_bits, _, a_bits = bits[1:].partition("A")
        options = SUFFIX_OPTIONS[suffix] if suffix else {}
        model = tf_qnets.quantize_model(
            model, w_bits=int(w_bits), a_bits=int(a_bits) if a_bits else None,
            calibration_data=x, verbose=0, **options)
        tf_qnets.set_temperature(model, weights=temperature,
                                 activations=temperature if a_bits else None)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    return model


def training_step(model):
    """One training step as ``model.fit`` runs it: the compiled train function on a
    long-lived iterator. Returns a callable that runs one step and waits for it.

    (``train_on_batch`` builds and tears down a tf.data iterator on every call; that
    teardown intermittently blocks for 100-150 ms on this machine, which is not a cost
    of training and used to dominate the medians.)
    """
    from tf_qnets.keras2.backend import tf

    x, y = _data()
    iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    train_function = model.make_train_function()

    def step():
        return float(train_function(iterator)["loss"].numpy())

    return step


def measure_time(names, rounds, warmup, temperature):
    steps = {}
    for name in names:
        for jit in (False, True):
            step = training_step(build(name, jit, temperature))
            for _ in range(warmup):
                step()
            steps[(name, jit)] = step
            print(f"  built and warmed up {name} jit={jit}", flush=True)
    times = {key: [] for key in steps}
    for r in range(rounds):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - start)
        print(f"  round {r + 1}/{rounds}", flush=True)
    steps.clear()   # release the models and their iterators before the report
    return {key: statistics.median(v) for key, v in times.items()}


def measure_profile(temperature):
    """The profiler's view of the float and W3A3 steps (benchmarks/step_profile.py)."""
    import step_profile

    profiles, model = {}, None
    for name in ("float", "W3A3"):
        model = build(name, False, temperature)
        step = training_step(model)
        for _ in range(3):
            step()
        profiles[name] = step_profile.profile_step(step)
        print(f"  profiled {name}", flush=True)
    kernels = step_profile.time_activation_quantizers(model, _data()[0])
    return step_profile.profile_report(profiles["float"], profiles["W3A3"], "W3A3", kernels)


def _vm_hwm_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_child(name, jit, temperature, live_steps=5):
    """Runs in a fresh process: prints JSON with the allocator's peak, the live tensors' peak
    (median and largest of ``live_steps`` profiled steps, benchmarks/live_tensors.py; and of
    the median step, the bytes of the XLA kernels' outputs alive at its peak) and peak RSS."""
    from tf_qnets.keras2.backend import tf
    import live_tensors

    step = training_step(build(name, jit, temperature))
    for _ in range(2):
        step()
    tf.config.experimental.reset_memory_stats("CPU:0")
    for _ in range(3):
        step()
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    steps = sorted(live_tensors.profile_live_tensors(step, live_steps),
                   key=lambda s: s.peak_bytes)
    median = steps[len(steps) // 2]
    xla = sum(t.requested_bytes for t in median.tensors_at_peak if t.op == "?")
    print("RESULT " + json.dumps({
        "peak_mib": peak / 2**20, "rss_mib": _vm_hwm_mib(),
        "live_mib": median.peak_bytes / 2**20, "live_max_mib": steps[-1].peak_bytes / 2**20,
        "live_xla_mib": xla / 2**20,
        "live_largest": [[t.requested_bytes / 2**20, t.op, t.shape] for t in median.largest()]}))


def measure_memory(names, temperature):
    results = {}
    env = dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC="true", TF_CPP_MIN_LOG_LEVEL="2")
    for name in names:
        for jit in (False, True):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", name, "--temperature",
                 str(temperature)] + (["--jit"] if jit else []),
                env=env, capture_output=True, text=True, check=False)
            line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
            if not line:
                raise RuntimeError(f"memory run of {name} jit={jit} failed:\n{out.stderr[-3000:]}")
            results[(name, jit)] = json.loads(line[0][len("RESULT "):])
            print(f"  memory {name} jit={jit}: {results[(name, jit)]}", flush=True)
    return results


def table(names, times, memory):
    base_t = times[("float", False)]
    base_m = memory.get(("float", False)) if memory else None
    lines = ["| config | jit_compile | step (ms) | / float step | peak live tensors (MiB) "
             "| / float | allocator peak (MiB) | / float | peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        for jit in (False, True):
            t = times[(name, jit)]
            row = f"| {name} | {jit} | {t * 1000:.0f} | {t / base_t:.2f} |"
            if memory and (name, jit) in memory:
                m = memory[(name, jit)]
                row += (f" {m['live_mib']:.0f} | {m['live_mib'] / base_m['live_mib']:.2f} |"
                        f" {m['peak_mib']:.0f} | {m['peak_mib'] / base_m['peak_mib']:.2f} |"
                        f" {m['rss_mib']:.0f} |")
            else:
                row += " - | - | - | - | - |"
            lines.append(row)
    return "\n".join(lines)


def _verdict(value, bound):
    return "met" if value <= bound else "not met"


def summary(times, memory):
    def fastest(name):
        return min(times[(name, False)], times[(name, True)])

    out = []
    for label, numerator, denominator, bound in SPEED_TARGETS:
        ratio = fastest(numerator) / fastest(denominator)
        out.append(f"- {label} (fastest of each): {ratio:.2f} (target <= {bound}): "
                   f"{_verdict(ratio, bound)}")
    for bits in A_BITS:
        if (f"W3A{bits}-exact", False) in times:
            out.append(f"- W3A{bits} / W3A{bits}-exact (fastest of each; the smooth activation "
                       f"gradient's cost): {fastest(f'W3A{bits}') / fastest(f'W3A{bits}-exact'):.2f}")
    for suffix, what in (("trained", "trained 8-bit activation thresholds"),
                         ("kmeans", "k-means 8-bit activation thresholds")):
        if (f"W3A8-{suffix}", False) in times:
            out.append(f"- W3A8-{suffix} / W3A8 (fastest of each; {what}' cost): "
                       f"{fastest(f'W3A8-{suffix}') / fastest('W3A8'):.2f}")
    if memory and ("W3A3", False) in memory and ("float", False) in memory:
        def smallest(name, key):
            return min(memory[(name, jit)][key] for jit in (False, True))

        for key, label in (("live_mib", "peak live tensors"), ("peak_mib", "allocator peak")):
            ratio = smallest("W3A3", key) / smallest("float", key)
            out.append(f"- W3A3 / float {label} (smallest of each): {ratio:.2f} "
                       f"(target <= {MEMORY_TARGET}): {_verdict(ratio, MEMORY_TARGET)}")
        if ("tfmot8", False) in memory:
            out.append(f"- W3A3 / tfmot 8-bit QAT peak live tensors (smallest of each): "
                       f"{smallest('W3A3', 'live_mib') / smallest('tfmot8', 'live_mib'):.2f}")
        m = memory[("W3A3", False)]
        out.append(f"- W3A3 (no jit): live tensors {m['live_mib']:.1f} MiB at the median "
                   f"step's peak ({m['live_max_mib']:.1f} MiB in the largest of the profiled "
                   f"steps), of which {m['live_xla_mib']:.1f} MiB are outputs of the "
                   "quantizers' XLA kernels")
    return "\n".join(out)


def write_docs(path, text):
    """Replace (or append) the '## Training speed' section of ``path``, keeping the others."""
    head = "## Training speed"
    old = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if head in old:
        before, _, rest = old.partition(head)
        nxt = rest.find("\n## ")
        after = rest[nxt + 1:] if nxt >= 0 else ""
    else:
        before, after = old.rstrip("\n") + "\n\n", ""
    with open(path, "w") as f:
        f.write(before + text.rstrip("\n") + "\n" + ("\n" + after if after else ""))


def keras3_arguments(args, parser):
    """The ``keras3_train_speed`` settings for ``--keras3-*`` (None when no backend is asked)."""
    import keras3_train_speed

    backends = [b.strip() for b in args.keras3_backends.split(",") if b.strip()]
    if not backends:
        return None
    argv = ["--backends", ",".join(backends), "--configs", args.keras3_configs,
            "--rounds", str(args.keras3_rounds), "--batch-size", str(BATCH),
            "--temperature", str(args.temperature), "--markdown", ""]
    try:
        return keras3_train_speed.parse_args(argv)
    except SystemExit:
        parser.error(f"--keras3-backends/--keras3-configs: see the message above "
                     f"(backends {', '.join(keras3_train_speed.BACKENDS)}; configs float, "
                     "W<bits>, W<bits>A<bits>)")


def measure_keras3(keras3_args):
    """The Keras 3 subsection: one process per backend (keras3_train_speed), or None."""
    if keras3_args is None:
        return None
    import keras3_train_speed

    results = [keras3_train_speed.run_backend(backend, keras3_args)
               for backend in keras3_args.backends]
    names = keras3_args.configs.split(",")
    return "\n".join([
        f"### Keras 3 (keras {results[0]['keras']}), same model and batch", "",
        f"`benchmarks/keras3_train_speed.py`'s measurement in this run: each backend in its own "
        f"process, `jit_compile=True`, plain `fit` epochs of {keras3_args.steps} batches "
        f"(one step: an epoch's wall time over its batches, `fit`'s own work included; \"batch "
        f"alone\": the median batch of the same epochs, timed by a callback), medians "
        f"of {keras3_args.rounds} interleaved epochs; ratios are to the same backend's float "
        "step. Under TensorFlow the epochs read a `tf.data.Dataset` with autotuning off "
        "(TensorFlow 2.21 often holds the end of an autotuned epoch until the autotuner's next "
        "wake-up: keras3_train_speed's docstring).", "",
        keras3_train_speed.table(results, names), "",
        keras3_train_speed.verdicts(results)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration")
    parser.add_argument("--temperature", type=float, default=10.0)
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help="comma-separated subset of " + ",".join(config_names()))
    parser.add_argument("--memory-configs", default=",".join(DEFAULT_MEMORY_CONFIGS),
                        help="configurations whose peak memory is measured")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    parser.add_argument("--no-profile", action="store_true", help="skip the step profile")
    parser.add_argument("--keras3-backends", default="jax,tensorflow",
                        help="Keras 3 backends to measure ('' to skip): jax, tensorflow")
    parser.add_argument("--keras3-configs", default="float,W3A3,W3A8",
                        help="Keras 3 configurations (float is always run)")
    parser.add_argument("--keras3-rounds", type=int, default=7,
                        help="timed fit epochs per Keras 3 configuration")
    parser.add_argument("--write", metavar="MARKDOWN", help="write the section into this file")
    parser.add_argument("--memory-child", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--jit", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.jit, args.temperature)
        return
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    memory_names = [n.strip() for n in args.memory_configs.split(",") if n.strip()]
    unknown = sorted(set(names + memory_names) - set(config_names()))
    if unknown:
        parser.error(f"unknown configurations {unknown}; allowed: {config_names()}")
    for needed in ("float", "tfmot8", "W3A2", "W3A3", "W3A8"):
        if needed not in names:
            names.insert(0, needed) if needed == "float" else names.append(needed)
    keras3_args = keras3_arguments(args, parser)
    command = "TF_CPP_MIN_LOG_LEVEL=2 python " + " ".join(
        ["benchmarks/train_speed.py"] + sys.argv[1:])
    load_before = os.getloadavg()
    times = measure_time(names, args.rounds, args.warmup, args.temperature)
    memory = None if args.no_memory else measure_memory(memory_names, args.temperature)
    profile = None if args.no_profile else measure_profile(args.temperature)
    keras3 = measure_keras3(keras3_args)
    load_after = os.getloadavg()
    import tensorflow as tf

    text = "\n".join([
        "## Training speed", "",
        f"Command: `{command}`", "",
        f"Machine: {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}; load average "
        f"(1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after (the cores are shared).",
        f"Model: 3x Conv-BN-ReLU CNN on 28x28x1, batch {BATCH}, SGD; tf_qnets at T = "
        f"{args.temperature:g}; medians of {args.rounds} interleaved steps after "
        f"{args.warmup} warm-up steps. Ratios are to the float step without jit_compile.", "",
        table(names, times, memory), "",
        summary(times, memory), "",
    ] + ([] if keras3 is None else [keras3, ""]) + ([] if profile is None else [
        "### Where the W3A3 step's time goes", "",
        "`benchmarks/step_profile.py` in the same run: the TensorFlow profiler over 5 "
        "steps of each model (no jit), ops summed by kind in thread-milliseconds per step "
        "(the two compute threads' busy time added up: wall time is about half where both "
        "are busy), then the activation quantizers' passes timed alone.", "",
        profile, ""]))
    print(text, flush=True)   # (once, a finished run hung in TensorFlow's teardown)
    if args.write:
        write_docs(args.write, text)
        print(f"written to {args.write}")


if __name__ == "__main__":
    main()

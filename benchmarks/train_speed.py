"""Training-step time and peak memory: float vs tfmot 8-bit QAT vs tf_qnets at 1..8 bits.

One fixed model and batch: a Fashion-MNIST-shaped CNN (28x28x1 inputs, three
Conv-BN-ReLU blocks, two max-pools, Dense(10)) trained with SGD on random data,
batch 128. Configurations:

* ``float``: the float model;
* ``tfmot8``: ``tfmot.quantization.keras.quantize_model`` (default 8-bit QAT);
* ``W3A<b>``: tf_qnets, 3-bit weights {-4..4 pow2}, b-bit activations, b = 1, 2, 3, 4, 8;
* ``W3A<b>-exact``: the same with ``activation_gradient="exact"`` (the default is
  ``"smooth"``);
* ``W<b>``: tf_qnets, b-bit weights, float activations, b = 1, 2, 3, 4, 8;

each compiled with and without ``jit_compile`` (tf_qnets' quantizer math is
XLA-compiled on its own in both cases, its default). tf_qnets quantizers run at
temperature ``--temperature`` (default 10: the first epoch of
``TemperatureScheduler(base=10)``).

Time: every model is built and warmed up in one process, then ``--rounds`` rounds
each run one training step (the compiled train function on a long-lived iterator,
as ``fit`` runs it) of every configuration in turn (interleaved, so that
the load of a shared machine hits all of them alike); the table gives the median
step and its ratio to the median float step (no jit) of the same run.

Memory: one fresh subprocess per configuration with TensorFlow's BFC allocator on
the CPU (``TF_CPU_ALLOCATOR_USE_BFC=true``), so that
``tf.config.experimental.get_memory_info("CPU:0")`` reports the peak bytes of live
TensorFlow buffers; the peak is reset after two warm-up steps and read after three
more (weights, optimizer state, batch and every activation/gradient kept for the
backward pass). The process peak RSS (``VmHWM``, whole process incl. the TensorFlow
runtime and XLA compiler) is printed too.

Run (about 10 minutes on 2 CPU cores)::

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


def config_names():
    names = ["float", "tfmot8"]
    names += [f"W3A{b}" for b in A_BITS]
    names += [f"W{b}" for b in W_BITS]
    names += [f"W3A{b}-exact" for b in A_BITS]
    return names


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((BATCH, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int64)
    return x, y


def _float_model(keras):
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
    from tf_qnets._keras import keras

    keras.utils.set_random_seed(0)
    model = _float_model(keras)
    x, _ = _data()
    if name == "tfmot8":
        import tensorflow_model_optimization as tfmot

        model = tfmot.quantization.keras.quantize_model(model)
    elif name != "float":
        bits, _, gradient = name.partition("-")   # "W3A3-exact": activation_gradient="exact"
        w_bits, _, a_bits = bits[1:].partition("A")
        options = {"activation_gradient": gradient} if gradient else {}
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
    from tf_qnets._keras import tf

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


def _vm_hwm_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_child(name, jit, temperature):
    """Runs in a fresh process: prints JSON with peak TF-buffer bytes and peak RSS."""
    from tf_qnets._keras import tf

    step = training_step(build(name, jit, temperature))
    for _ in range(2):
        step()
    tf.config.experimental.reset_memory_stats("CPU:0")
    for _ in range(3):
        step()
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    print("RESULT " + json.dumps({"peak_mib": peak / 2**20, "rss_mib": _vm_hwm_mib()}))


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
    lines = ["| config | jit_compile | step (ms) | / float step | peak TF buffers (MiB) | / float "
             "| peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        for jit in (False, True):
            t = times[(name, jit)]
            row = f"| {name} | {jit} | {t * 1000:.0f} | {t / base_t:.2f} |"
            if memory:
                m = memory[(name, jit)]
                row += (f" {m['peak_mib']:.0f} | {m['peak_mib'] / base_m['peak_mib']:.2f} |"
                        f" {m['rss_mib']:.0f} |")
            else:
                row += " - | - | - |"
            lines.append(row)
    return "\n".join(lines)


def summary(times, memory):
    def fastest(name):
        return min(times[(name, False)], times[(name, True)])

    out = []
    f, q, t8 = fastest("float"), fastest("W3A3"), fastest("tfmot8")
    out.append(f"- W3A3 / float (fastest of each): {q / f:.2f} (target <= 1.5)")
    out.append(f"- W3A3 / tfmot 8-bit QAT (fastest of each): {q / t8:.2f} (target <= 1.0)")
    out.append(f"- W3A8 / W3A2 (fastest of each): {fastest('W3A8') / fastest('W3A2'):.2f} "
               "(target <= 1.2)")
    for bits in A_BITS:
        if (f"W3A{bits}-exact", False) in times:
            out.append(f"- W3A{bits} / W3A{bits}-exact (fastest of each; the smooth activation "
                       f"gradient's cost): {fastest(f'W3A{bits}') / fastest(f'W3A{bits}-exact'):.2f}")
    if memory:
        m = min(memory[("W3A3", False)]["peak_mib"], memory[("W3A3", True)]["peak_mib"])
        mf = min(memory[("float", False)]["peak_mib"], memory[("float", True)]["peak_mib"])
        out.append(f"- W3A3 / float peak TF buffers (smallest of each): {m / mf:.2f} "
                   "(target <= 1.3)")
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration")
    parser.add_argument("--temperature", type=float, default=10.0)
    parser.add_argument("--configs", default=",".join(config_names()),
                        help="comma-separated subset of " + ",".join(config_names()))
    parser.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    parser.add_argument("--write", metavar="MARKDOWN", help="write the section into this file")
    parser.add_argument("--memory-child", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--jit", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.jit, args.temperature)
        return
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = sorted(set(names) - set(config_names()))
    if unknown:
        parser.error(f"unknown --configs {unknown}; allowed: {config_names()}")
    for needed in ("float", "tfmot8", "W3A2", "W3A3", "W3A8"):
        if needed not in names:
            names.insert(0, needed) if needed == "float" else names.append(needed)
    command = "TF_CPP_MIN_LOG_LEVEL=2 python " + " ".join(
        ["benchmarks/train_speed.py"] + sys.argv[1:])
    load_before = os.getloadavg()
    times = measure_time(names, args.rounds, args.warmup, args.temperature)
    memory = None if args.no_memory else measure_memory(names, args.temperature)
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
    ])
    print(text, flush=True)   # (once, a finished run hung in TensorFlow's teardown)
    if args.write:
        write_docs(args.write, text)
        print(f"written to {args.write}")


if __name__ == "__main__":
    main()

"""How long ``fit`` takes after its last batch: autotuned input pipelines under TensorFlow 2.21.

Deleting an autotuned ``tf.data`` iterator (``fit`` deletes its own when it ends) can wait for
the autotuner's thread to wake up by itself. That thread sleeps for periods that double from
10 ms, so it wakes at ``10 ms * (2^k - 1)`` after the iterator was made (1.27 s, 2.55 s,
5.11 s, 10.23 s, ... up to one minute apart), and a ``fit`` whose batches took 0.7 s can
return after 1.3 s. This script measures it on the Keras 2 path (``tf_keras``), with a plain
float CNN (the benchmark of ``benchmarks/train_speed.py``; the wait is TensorFlow's, whatever
the model computes), fed two ways:

* ``arrays``: ``fit(x, y, batch_size=...)``, as most users call it (Keras builds an autotuned
  pipeline);
* ``dataset, autotune off``: ``fit(ds)`` with ``ds = tf.data.Dataset.from_tensor_slices((x,
  y)).batch(...)`` and ``options.autotune.enabled = False`` (the workaround in docs/train.md,
  "When fit returns late").

For each feed, ``--fits`` calls of ``fit`` (``--epochs`` epochs over ``--samples`` images), each
timed whole and from its last batch's end (a callback) to its return; the two feeds alternate.

    python benchmarks/fit_teardown.py                   # about 2 minutes on 2 CPU cores
"""

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

FEEDS = ("arrays", "dataset, autotune off")


def feed(name, x, y, batch):
    """``(args, kwargs)`` for ``fit`` under feed ``name`` (one of :data:`FEEDS`)."""
    from keras3_train_speed import untuned_dataset

    if name == "arrays":
        return (x, y), {"batch_size": batch, "shuffle": False}
    if name == "dataset, autotune off":
        return (untuned_dataset(x, y, batch),), {}
    raise ValueError(f"feed must be one of {FEEDS}, got {name!r}")


def time_fits(model, x, y, batch, epochs, fits, log=print):
    """``{feed: [(fit seconds, seconds after the last batch), ...]}``, feeds alternating."""
    import tf_keras as keras

    class LastBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, index, logs=None):
            self.end = time.perf_counter()

    results = {name: [] for name in FEEDS}
    for index in range(fits):
        for name in FEEDS:
            args, kwargs = feed(name, x, y, batch)
            last = LastBatch()
            start = time.perf_counter()
            model.fit(*args, epochs=epochs, verbose=0, callbacks=[last], **kwargs)
            end = time.perf_counter()
            results[name].append((end - start, end - last.end))
            log(f"  fit {index + 1}/{fits}, {name}: {end - start:.2f} s, "
                f"{end - last.end:.2f} s after the last batch")
    return results


def report(results, command, settings):
    """The printed table: per feed, median and largest fit time and wait after the last batch."""
    lines = [f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {settings}.", "",
             "| feed | fit: median / largest | after the last batch: median / largest |",
             "|---|---|---|"]
    for name, runs in results.items():
        whole = [w for w, _ in runs]
        after = [a for _, a in runs]
        lines.append(f"| {name} | {statistics.median(whole):.2f} / {max(whole):.2f} s | "
                     f"{statistics.median(after):.2f} / {max(after):.2f} s |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=8, help="fit calls per feed")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per fit")
    parser.add_argument("--samples", type=int, default=1024, help="random 28x28x1 images")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    for option in ("fits", "epochs", "samples", "batch_size"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from train_speed import float_model

    rng = np.random.default_rng(0)
    x = rng.random((args.samples, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.samples)
    model = float_model(keras)
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)     # traces the step
    results = time_fits(model, x, y, args.batch_size, args.epochs, args.fits)
    command = "python " + " ".join(["benchmarks/fit_teardown.py"] + sys.argv[1:])
    settings = (f"TensorFlow {tf.__version__}, tf_keras {keras.__version__}; {args.fits} fits "
                f"of {args.epochs} epoch(s) over {args.samples} images, batch {args.batch_size}")
    print(report(results, command, settings))


if __name__ == "__main__":
    main()

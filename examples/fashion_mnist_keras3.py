"""The Fashion-MNIST example on Keras 3 (``--keras 3 --backend tensorflow|jax``).

The same steps and outputs as the Keras 2 run of ``fashion_mnist.py``: a float CNN (cached),
``tf_qnets.quantize_model`` per ``--bits`` setting, a fine-tune with the temperature
schedule (cosine-decayed Adam, XLA-compiled), ``evaluate`` of the hard model, an integer
TFLite file exported in this same process (TensorFlow is imported only then), its check in
the standalone runtime (a process without TensorFlow), the table and the pictures. The
backend must be chosen before Keras is imported: ``fashion_mnist.main`` sets
``KERAS_BACKEND`` and then calls :func:`main`.
"""

import math
import os

import tf_qnets
from fashion_mnist_model import epoch_batches

__all__ = ["main"]


def _compile(keras, model, learning_rate):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=True)


def float_model(keras, args, train, verbose):
    """Train the float CNN with Keras 3, or reuse the one cached for the same settings."""
    import json

    from fashion_mnist_model import build_cnn

    backend = keras.backend.backend()
    path = os.path.join(args.output_dir, f"float_model_keras3_{backend}.keras")
    width = 16 if args.quick else 32
    meta = {"epochs": args.float_epochs, "width": width, "seed": args.seed,
            "train_samples": len(train[0])}
    if os.path.exists(path) and os.path.exists(path + ".json"):
        with open(path + ".json") as handle:
            if json.load(handle) == meta:
                print(f"[float] reusing {path}")
                return keras.saving.load_model(path)
    print(f"[float] training {args.float_epochs} epoch(s) with Keras {keras.__version__} "
          f"on {backend}")
    keras.utils.set_random_seed(args.seed)
    model = build_cnn(width=width, keras_module=keras)
    _compile(keras, model, 1e-3)
    model.fit(epoch_batches(keras, *train, args.batch_size, args.seed), epochs=args.float_epochs,
              verbose=verbose)
    model.save(path)
    with open(path + ".json", "w") as handle:
        json.dump(meta, handle)
    return model


def quantize_and_train(keras, float_net, args, train, w_bits, a_bits, verbose):
    """quantize_model, then the fine-tune of the Keras 2 run (docs/train.md, "Recipe")."""
    steps = args.qat_epochs * math.ceil(len(train[0]) / args.batch_size)
    qat = tf_qnets.quantize_model(float_net, w_bits=w_bits, a_bits=a_bits,
                                  calibration_data=train[0][:1024], thresholds=args.thresholds,
                                  first_last=args.first_last)
    _compile(keras, qat, keras.optimizers.schedules.CosineDecay(2e-4, steps))
    qat.fit(epoch_batches(keras, *train, args.batch_size, args.seed), epochs=args.qat_epochs,
            verbose=verbose,
            callbacks=[tf_qnets.TemperatureScheduler(base=args.temperature_base, verbose=1)])
    return qat


def main(args, shared):
    """Run the example on Keras 3; ``shared`` is the ``fashion_mnist`` module (data loading,
    the standalone-runtime check and the report are the same for both Kerases)."""
    if args.strategy != "one":
        raise SystemExit("error: --strategy applies to the Keras 2 run; Keras 3 runs on one device "
                         "(--keras 3 with --strategy one).")
    import keras

    train, test = shared.load_data(args)
    print(f"[data] train {train[0].shape}, test {test[0].shape}; Keras {keras.__version__}, "
          f"backend {keras.backend.backend()}")
    float_net = float_model(keras, args, train, shared.VERBOSE)
    _compile(keras, float_net, 1e-3)
    float_acc = shared.accuracy(float_net, test)
    print(f"[float] test accuracy {float_acc:.4f}")
    rows = []
    for w_bits, a_bits in args.bits:
        name = f"W{w_bits}" + (f"A{a_bits}" if a_bits else "")
        print(f"\n[{name}] quantize_model + fine-tune {args.qat_epochs} epoch(s)")
        qat = quantize_and_train(keras, float_net, args, train, w_bits, a_bits, shared.VERBOSE)
        hard_acc = shared.accuracy(qat, test)
        print(f"[{name}] hard-staircase test accuracy {hard_acc:.4f}")
        rows.append(shared.export_and_report(qat, args, name, train, test, hard_acc))
    shared.report(args, float_acc, rows)

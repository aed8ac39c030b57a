"""The ``tf-qnets`` command.

::

    tf-qnets export SAVED_MODEL_OR_KERAS_FILE -o model.tflite [--representative inputs.npy]
                    [--input-range LO HI] [--int8-io] [--int4-weights auto|on|off]
                    [--verify test.npz]
    tf-qnets inspect model.tflite

``export`` loads a model saved from a :func:`tf_qnets.quantize_model` result and writes an
integer TFLite file (see :func:`tf_qnets.export.export_tflite`). Representative inputs
come from a ``.npy`` file (an array of inputs, batch first) or a ``.npz`` file (array
``x``, or its first array); without one, 256 inputs drawn uniformly from ``--input-range``
(default 0 1) calibrate the ranges, and a note says so. ``--verify`` takes a ``.npz`` with
``x`` and optionally ``y`` and prints the agreement with the Keras model.

``inspect`` prints the op table, tensor dtypes, file size and the distinct integer codes
of every weight tensor; it reads the flatbuffer and never runs the model.

Every error ends the command with exit status 1 and one line on stderr.
"""

import argparse
import os
import sys

import numpy as np

__all__ = ["main", "build_parser"]

INT4_FLAGS = {"auto": "auto", "on": True, "off": False}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tf-qnets", description="Export and inspect integer TFLite models of tf_qnets.")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="export a quantize_model() result to .tflite")
    export.add_argument("model", help="SavedModel folder, .keras or .h5 file")
    export.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    export.add_argument("--representative", help=".npy or .npz file of typical inputs")
    export.add_argument("--input-range", nargs=2, type=float, default=(0.0, 1.0),
                        metavar=("LO", "HI"),
                        help="range of the uniform inputs used without --representative")
    export.add_argument("--int8-io", action="store_true", help="int8 input and output tensors")
    export.add_argument("--int4-weights", choices=sorted(INT4_FLAGS), default="off",
                        help="pack weights with levels in -7..7 as INT4: a smaller, slower file "
                             "(default off)")
    export.add_argument("--verify", help=".npz file with x (and y) to compare Keras and TFLite")
    inspect = commands.add_parser("inspect", help="describe a .tflite file")
    inspect.add_argument("file", help="the .tflite file")
    return parser


def _load_array(path, argument):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{argument}: no file at {path!r}.")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{argument}: {path!r} is not a .npy/.npz file ({error}).") from None
    if isinstance(loaded, np.ndarray):
        return loaded, None
    keys = list(loaded.keys())
    if not keys:
        raise ValueError(f"{argument}: {path!r} holds no arrays.")
    x = loaded["x"] if "x" in keys else loaded[keys[0]]
    y = loaded["y"] if "y" in keys else None
    return x, y


def _export(args):
    # TensorFlow is imported only for export.
    import tf_qnets
    from tf_qnets.export import export_tflite

    if not os.path.exists(args.model):
        raise FileNotFoundError(f"model: no file or folder at {args.model!r}.")
    try:
        model = tf_qnets.load_model(args.model, compile=False)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for unreadable models
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot load model {args.model!r}: {message}") from None
    if args.representative:
        representative, _ = _load_array(args.representative, "--representative")
    else:
        lo, hi = args.input_range
        if not hi > lo:
            raise ValueError(f"--input-range: HI must exceed LO, got {lo} {hi}.")
        shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        representative = np.random.default_rng(0).uniform(lo, hi, (256,) + shape).astype("float32")
        print(f"note: no --representative data; calibrating on uniform inputs in [{lo}, {hi}]",
              file=sys.stderr)
    verify = None
    if args.verify:
        verify = _load_array(args.verify, "--verify")
        verify = verify if verify[1] is not None else verify[0]
    report = export_tflite(model, args.output, representative, int8_io=args.int8_io,
                           int4_weights=INT4_FLAGS[args.int4_weights], verify_data=verify)
    print(report)


def _inspect(args):
    from tf_qnets.export.inspect import inspect_tflite

    print(inspect_tflite(args.file))


def main(argv=None):
    """Entry point of ``tf-qnets``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "export":
            _export(args)
        else:
            _inspect(args)
    except (ValueError, TypeError, OSError, ImportError, RuntimeError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"tf-qnets {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``tfcompress`` command line: ``demo``, ``summary`` and ``export``.

Run ``tfcompress --help`` or ``tfcompress COMMAND --help``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _load_model(path: str, unsafe: bool = False):
    import keras

    import tfcompress  # noqa: F401  (registers tfcompress layers for deserialization)

    file = Path(path)
    if not file.is_file():
        raise CLIError(f"model file {path!r} does not exist")
    if file.suffix != ".keras":
        raise CLIError(f"model file {path!r} must be a Keras v3 '.keras' file")
    try:
        return keras.models.load_model(file, safe_mode=not unsafe, compile=False)
    except Exception as error:
        raise CLIError(
            f"could not load {path!r} as a Keras model ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no details'}). Is it a complete "
            ".keras file saved with model.save()?"
        ) from error


def _load_npz(path: str, argument: str):
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise CLIError(f"{argument} file {path!r} does not exist")
    try:
        with file.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as error:
        raise CLIError(f"could not read {argument} {path!r} as a .npz file: {error}") from error
    if not arrays:
        raise CLIError(f"{argument} {path!r} holds no arrays")
    x = arrays.get("x", next(iter(arrays.values())))
    return x, arrays.get("y")


def _cmd_demo(args: argparse.Namespace) -> int:
    from tfcompress.demo import discover, run_demo

    if args.list:
        for technique in discover():
            print(technique.name)
        return 0
    try:
        rows = run_demo(
            out_dir=args.out,
            epochs=args.epochs,
            fine_tune_epochs=args.fine_tune_epochs,
            techniques=args.technique or None,
            seed=args.seed,
        )
    except ValueError as error:
        raise CLIError(str(error)) from error
    return 1 if any(r.error for r in rows) else 0


def _cmd_summary(args: argparse.Namespace) -> int:
    import json

    from tfcompress.reporting import summary

    model = _load_model(args.model, args.unsafe)
    result = summary(model, print_fn=None if args.json else print)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from tfcompress.export.tflite import export
    from tfcompress.export.converter import validate_quantization

    try:
        quantization = validate_quantization(args.quantization)
    except ValueError as error:
        raise CLIError(str(error)) from error
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CLIError(f"--out {args.out!r}: directory {str(out.parent)!r} does not exist")
    calibration = labels = None
    if args.calibration:
        calibration, labels = _load_npz(args.calibration, "--calibration")
    model = _load_model(args.model, args.unsafe)
    try:
        report = export(
            model,
            out,
            quantization=quantization,
            representative_data=calibration,
            verify=not args.no_verify,
            verify_data=calibration,
            verify_labels=labels,
            latency_runs=args.latency_runs,
        )
    except ValueError as error:
        raise CLIError(str(error)) from error
    print(report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfcompress",
        description="Model compression for Keras 3 on TensorFlow, with verified TFLite export.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="train a digits CNN, compress it every way, export each to TFLite and compare",
        description="Trains a small float CNN on the bundled digits data, runs every compression "
        "technique, exports each to TFLite, verifies it in the LiteRT interpreter, prints one "
        "table and writes results.json and size_vs_accuracy.png.",
    )
    demo.add_argument(
        "--out", default="demo_output", help="output directory (default: %(default)s)"
    )
    demo.add_argument("--epochs", type=int, default=12, help="float training epochs (%(default)s)")
    demo.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=3,
        help="epochs each retraining technique may use (%(default)s)",
    )
    demo.add_argument(
        "--technique",
        action="append",
        metavar="NAME",
        help="run only this technique (repeatable); see --list",
    )
    demo.add_argument("--list", action="store_true", help="list the techniques and exit")
    demo.add_argument("--seed", type=int, default=0, help="random seed (%(default)s)")
    demo.set_defaults(func=_cmd_demo)

    summ = sub.add_parser(
        "summary",
        help="per-layer params, bits per weight, sparsity, bytes and MACs of a .keras model",
    )
    summ.add_argument("model", help="a .keras file")
    summ.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summ.add_argument(
        "--unsafe",
        action="store_true",
        help="load with safe_mode=False (only for files you trust: allows lambda layers)",
    )
    summ.set_defaults(func=_cmd_summary)

    exp = sub.add_parser(
        "export",
        help="convert a .keras model to .tflite, verify it in LiteRT and report sizes",
        description="Converts a .keras model to TFLite, runs the file in the LiteRT interpreter "
        "and compares it with Keras on the calibration data (or random inputs).",
    )
    exp.add_argument("model", help="a .keras file")
    exp.add_argument("--out", required=True, help="the .tflite file to write")
    exp.add_argument(
        "--quantization",
        default="none",
        help="none, dynamic, float16 or int8 (int8 needs --calibration unless the model is "
        "quantization-aware)",
    )
    exp.add_argument(
        "--calibration",
        metavar="NPZ",
        help="a .npz with inputs under 'x' (or its first array) and optional labels under "
        "'y': calibrates int8 and is the verification data",
    )
    exp.add_argument("--no-verify", action="store_true", help="skip running the file in LiteRT")
    exp.add_argument(
        "--latency-runs",
        type=int,
        default=50,
        help="single-example invokes to time (0 to skip; default %(default)s)",
    )
    exp.add_argument("--unsafe", action="store_true", help="load with safe_mode=False")
    exp.set_defaults(func=_cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tfcompress`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_tensorflow()
    try:
        return args.func(args)
    except CLIError as error:
        print(f"tfcompress {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

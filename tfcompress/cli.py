"""The ``tfcompress`` command line: ``demo``, ``summary`` and ``export``.

Run ``tfcompress --help`` or ``tfcompress COMMAND --help``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


class CLIError(Exception):
    """A user error: printed as one line, exit status 2 (or the status given)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _keras_file_problem(file: Path) -> str | None:
    """Why ``file`` is not a readable .keras archive (a zip holding config.json), or None."""
    import zipfile

    try:
        with zipfile.ZipFile(file) as archive:
            if "config.json" not in archive.namelist():
                return "the zip archive has no config.json"
            bad = archive.testzip()  # reads every member and checks its CRC-32
    except zipfile.BadZipFile as error:
        return f"it is not a zip archive ({error})"
    except Exception as error:  # zlib.error, unsupported compression, EOFError...
        return f"its zip archive is damaged ({type(error).__name__}: {error})"
    if bad is not None:
        return f"member {bad!r} fails its CRC-32 check (the file is corrupted)"
    return None


def _start_tensorflow() -> None:
    """Imports TensorFlow and every tfcompress layer quietly (only the commands that need them)."""
    from tfcompress.core.native_logs import start_tensorflow_quietly

    start_tensorflow_quietly()
    import tfcompress

    tfcompress.load_all()


def _one_line(error: BaseException) -> str:
    """The first non-empty line of an error message, without terminal colour codes."""
    lines = [line.strip() for line in _ANSI.sub("", str(error)).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _load_model(path: str, unsafe: bool = False):
    import keras

    import tfcompress  # noqa: F401  (registers tfcompress layers for deserialization)

    file = Path(path)
    if not file.is_file():
        raise CLIError(f"model file {path!r} does not exist")
    if file.suffix != ".keras":
        raise CLIError(f"model file {path!r} must be a Keras v3 '.keras' file")
    problem = _keras_file_problem(file)
    if problem is not None:
        # Keras itself reports a damaged archive as "File not found".
        raise CLIError(
            f"could not load {path!r}: it is not a valid .keras file: {problem}. Expected a "
            "complete file saved with model.save('model.keras')"
        )
    try:
        return keras.models.load_model(file, safe_mode=not unsafe, compile=False)
    except Exception as error:
        raise CLIError(
            f"could not load {path!r} as a Keras model ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no details'}). Is it a complete "
            ".keras file saved with model.save()?"
        ) from error


_NPZ_EXPECTED = (
    "expected a NumPy .npz archive (numpy.savez) with the inputs under 'x' (or as its first "
    "array) and optional labels under 'y'"
)


def _load_npz(path: str, argument: str):
    import zipfile

    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise CLIError(f"{argument} file {path!r} does not exist")
    if not zipfile.is_zipfile(file):
        raise CLIError(
            f"could not read {argument} {path!r}: it is not a .npz file; {_NPZ_EXPECTED}"
        )
    try:
        with np.load(file, allow_pickle=False) as archive:
            names = [n for n in archive.files if f"{n}.npy" in archive.zip.namelist()]
            arrays = {k: archive[k] for k in names}
    except Exception as error:
        # numpy's own message for object arrays recommends unsafe loading: never pass that on.
        reason = (
            "it holds object arrays, which are never loaded (that would run pickle)"
            if "pickle" in str(error)
            else f"it is not a valid .npz file ({type(error).__name__}: {error})"
        )
        raise CLIError(f"could not read {argument} {path!r}: {reason}; {_NPZ_EXPECTED}") from None
    if not arrays:
        raise CLIError(f"{argument} {path!r} holds no arrays; {_NPZ_EXPECTED}")
    x = arrays.get("x", next(iter(arrays.values())))
    return x, arrays.get("y")


def _cmd_demo(args: argparse.Namespace) -> int:
    _start_tensorflow()
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
    _start_tensorflow()
    import json

    from tfcompress.reporting import summary

    model = _load_model(args.model, args.unsafe)
    result = summary(model, print_fn=None if args.json else print)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    _start_tensorflow()
    from tfcompress.core.calibration import calibration_data
    from tfcompress.core.native_logs import native_log_capture
    from tfcompress.export.converter import is_quantization_aware, validate_quantization
    from tfcompress.export.tflite import export

    try:
        quantization = validate_quantization(args.quantization)
    except ValueError as error:
        raise CLIError(_one_line(error)) from error
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CLIError(f"--out {args.out!r}: directory {str(out.parent)!r} does not exist")
    calibration = labels = None
    if args.calibration:
        calibration, labels = _load_npz(args.calibration, "--calibration")
    model = _load_model(args.model, args.unsafe)
    if quantization == "int8" and calibration is None and not is_quantization_aware(model):
        raise CLIError(
            "--quantization int8 needs --calibration FILE.npz: a few hundred typical inputs "
            "(under key 'x', e.g. np.savez('calib.npz', x=x_train[:500])) to calibrate "
            "activation ranges; or export a model trained with tfcompress quantization-aware "
            "layers, which needs none"
        )
    if calibration is not None:
        try:
            calibration = calibration_data(
                calibration, model, argument=f"--calibration {args.calibration!r}: x"
            )
        except (ValueError, TypeError) as error:
            raise CLIError(_one_line(error)) from error
        if labels is not None and len(labels) != calibration.num_samples:
            raise CLIError(
                f"--calibration {args.calibration!r}: y has {len(labels)} labels for "
                f"{calibration.num_samples} inputs in x; give one label per input"
            )
    try:
        with native_log_capture():  # LiteRT's delegate notes; shown if export fails
            report = export(
                model,
                out,
                quantization=quantization,
                representative_data=calibration,
                verify=not args.no_verify,
                verify_data=calibration,
                verify_labels=labels,
                latency_runs=args.latency_runs,
                verbose=1 if sys.stdout.isatty() else 0,  # no progress bars in logs and pipes
            )
    except (ValueError, TypeError, RuntimeError) as error:
        raise CLIError(_one_line(error)) from error
    print(report)
    if report.verify_error:
        raise CLIError(f"verification failed: {report.verify_error}", 1)
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
        type=_non_negative_int,
        default=50,
        help="single-example invokes to time (0 to skip; default %(default)s)",
    )
    exp.add_argument("--unsafe", action="store_true", help="load with safe_mode=False")
    exp.set_defaults(func=_cmd_export)

    from tfcompress.bench.cli import add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tfcompress`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_tensorflow()
    try:
        return args.func(args)
    except CLIError as error:
        print(f"tfcompress {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return error.status


if __name__ == "__main__":
    sys.exit(main())

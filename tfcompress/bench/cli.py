"""``tfcompress bench ...``: run the suite, rebuild its report, list what it has.

tfcompress bench suite [--quick | --tiny] [--workloads A B] [--methods X Y]
                       [--seeds 0 1 2] [--out bench_results] [--no-latency] [--jobs 2]
tfcompress bench report bench_results/results.json [--out folder]
tfcompress bench list
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["add_bench_parser", "run_bench"]


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """Adds the ``bench`` command (with its own subcommands) to a parser."""
    bench = sub.add_parser(
        "bench",
        help="the standard benchmark suite: every method on fixed workloads, JSON + report + plots",
        description="Runs the tfcompress benchmark suite (python3 run.py bench suite does the "
        "same with its own set-up).",
    )
    what = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)
    suite = what.add_parser("suite", help="run the suite and write results.json, report.md, plots")
    size = suite.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="2 levels per method, shorter budgets (<= 15 minutes on 2 cores)",
    )
    size.add_argument(
        "--tiny",
        action="store_true",
        help="1 level, 1 seed, 1-2 epochs: the test command's smoke run",
    )
    suite.add_argument("--workloads", nargs="+", metavar="NAME", help="only these workloads")
    suite.add_argument("--methods", nargs="+", metavar="NAME", help="only these methods")
    suite.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        metavar="N",
        help="seeds of the starting models (default 0 1 2; --quick and --tiny: 0)",
    )
    suite.add_argument("--out", default="bench_results", help="output folder (%(default)s)")
    suite.add_argument("--no-latency", action="store_true", help="skip the LiteRT timing")
    suite.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        metavar="N",
        help="worker processes, each running (workload, method) units, costliest first (one process keeps about one "
        "core busy; latency is timed after the workers finish); default %(default)s",
    )
    suite.add_argument("--quiet", action="store_true", help="no progress bar")
    report = what.add_parser("report", help="rebuild report.md and plots from a results.json")
    report.add_argument("results", help="a results.json written by `bench suite`")
    report.add_argument("--out", help="output folder (default: the results' folder)")
    report.add_argument(
        "--summary",
        action="store_true",
        help="print the README's summary table instead of writing files",
    )
    what.add_parser("list", help="list the workloads and methods")
    worker = what.add_parser("worker", help=argparse.SUPPRESS)  # started by --jobs runs
    worker.add_argument("spec", nargs="?", help="JSON: run_suite's arguments and the output path")
    worker.add_argument("--serve", action="store_true", help="read one spec per line on stdin")
    bench.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """Runs one ``bench`` subcommand; returns the exit status."""
    from pathlib import Path

    from tfcompress.core.native_logs import start_tensorflow_quietly

    start_tensorflow_quietly()
    import tensorflow as tf

    # Each arm is a new model, so Keras' predict/fit functions are traced per arm by design;
    # TensorFlow's "triggered tf.function retracing" warnings would fill the log.
    tf.get_logger().setLevel("ERROR")
    if args.bench_command == "worker":
        from tfcompress.bench.worker import run_worker, serve

        if args.serve == (args.spec is not None):
            raise SystemExit("bench worker takes a SPEC or --serve, not both or neither")
        return serve() if args.serve else run_worker(args.spec)
    from tfcompress.bench.report import load_document, write_report

    if args.bench_command == "list":
        from tfcompress.bench.catalog import list_methods
        from tfcompress.bench.workloads import list_workloads

        print("workloads:")
        for w in list_workloads():
            print(f"  {w.name:18s} {w.description}")
        print("methods:")
        for m in list_methods():
            levels = ", ".join(str(v) for v in m.levels)
            print(
                f"  {m.name:22s} [{m.family}] {m.level_name}: {levels}; "
                f"on {', '.join(m.applies_to)}"
            )
        return 0
    if args.bench_command == "report":
        document = load_document(args.results)
        if args.summary:
            from tfcompress.bench.report import summary_markdown

            print(summary_markdown(document), end="")
            return 0
        folder = Path(args.out) if args.out else Path(args.results).parent
        for name, path in write_report(document, folder).items():
            print(f"{name}: {path}")
        return 0
    out = Path(args.out)
    options = {
        "quick": args.quick,
        "tiny": args.tiny,
        "seeds": args.seeds,
        "latency": not args.no_latency,
        "folder": out / "files",
    }
    if args.jobs > 1:
        from tfcompress.bench.parallel import run_parallel

        document = run_parallel(args.workloads, args.methods, jobs=args.jobs, **options)
    else:
        from tfcompress.bench.suite import run_suite

        document = run_suite(
            args.workloads, args.methods, verbose=0 if args.quiet else 1, **options
        )
    written = write_report(document, out)
    for name, path in written.items():
        print(f"{name}: {path}")
    failed = [
        f"{w['name']}/{a['method']}@{a['level']}"
        for w in document["workloads"]
        for a in w["arms"]
        if a.get("errors")
    ]
    failed += [f"{w['name']} (worker: {w['error']})" for w in document.get("failed_workloads", [])]
    if failed:
        print(
            f"{len(failed)} arm(s) had errors (see report.md): {', '.join(failed)}", file=sys.stderr
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tfcompress")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""Runs the benchmark suite: every method at every level and seed on every workload it
applies to, measured the same way, into one versioned JSON document.

Per workload: the trained starting model of each seed is evaluated (the dense
reference); each (method, level, seed) arm gets a fresh copy, the method
compresses it (fine-tuning with the workload's fixed budget if it fine-tunes),
and the suite measures quality (on the Keras model, or on the TFLite file for
methods whose compression happens in the converter), parameters and MACs. The
first seed's model of each (method, level) is exported to TFLite (verified)
for bytes and then timed with the dense float file in one interleaved
latency run. A failing arm is recorded with its error and the run goes on.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress.bench.api import Method, MethodRun, Workload
from tfcompress.bench.catalog import list_methods
from tfcompress.bench.metrics import export_arm, file_sizes, latency_table, model_stats
from tfcompress.bench.timing import machine_conditions
from tfcompress.bench.workloads import list_workloads
from tfcompress.export.interpreter import TFLiteModel

__all__ = [
    "SCHEMA",
    "RunSetup",
    "levels_for",
    "prepare_run",
    "run_suite",
    "sanity_checks",
    "seeds_for",
    "time_workload",
]

SCHEMA = "tfcompress.bench.suite/1"
_TFLITE_EVALUATED = ("float16", "dynamic", "int8")


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) != len(values) or not finite:
        return (None, None) if not finite else (float("nan"), float("nan"))
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else 0.0)


def select(names: Sequence[str] | None, known: list, what: str) -> list:
    """The items of ``known`` called ``names`` (all when None), in the order given."""
    if names is None:
        return known
    by_name = {item.name: item for item in known}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(by_name)}")
    return [by_name[n] for n in names]


class _Progress:
    """A bar over arms (verbose 1), or one line per arm (verbose 2: worker processes)."""

    def __init__(self, total: int, verbose: int):
        self.bar = keras.utils.Progbar(total, unit_name="arm") if verbose == 1 and total else None
        self.lines = verbose == 2
        self.total, self.done, self.started = total, 0, time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.done)
            print(f"  {label}", file=sys.stderr, flush=True)
        elif self.lines:
            elapsed = time.perf_counter() - self.started
            print(
                f"[bench] {self.done}/{self.total} {label} ({elapsed:.0f} s)",
                file=sys.stderr,
                flush=True,
            )


def _evaluate_tflite(workload: Workload, path: Path) -> dict:
    runner = TFLiteModel(path, num_threads=2)
    return workload.evaluate(lambda x: runner.predict(x, batch_size=64))


def _run_arm(
    workload: Workload, method: Method, level: Any, seed: int, folder: Path, export_file: bool
) -> dict:
    began = time.perf_counter()
    arm: dict[str, Any] = {"seed": seed, "error": None}
    model = workload.train(seed)
    start = time.perf_counter()
    result = method.fn(model, MethodRun(workload, level, seed))
    arm["seconds"] = time.perf_counter() - start
    arm["notes"] = result.notes
    mode = result.export if not callable(result.export) else "custom"
    arm["export"] = mode
    path = folder / f"{method.name}_{level}_s{seed}.tflite".replace("/", "_")
    if result.model is not None:
        arm.update(model_stats(result.model))
    needs_file = export_file or mode in _TFLITE_EVALUATED or callable(result.export)
    if needs_file:
        if callable(result.export):
            result.export(str(path))
            arm.update(file_sizes(path))
        else:
            arm.update(export_arm(result.model, path, mode, workload, seed, result.calibrate))
        arm["file"] = str(path)
    if result.quality is not None:
        arm["quality"] = dict(result.quality)
        arm["quality_from"] = "method"
    elif mode in _TFLITE_EVALUATED or callable(result.export):
        arm["quality"] = _evaluate_tflite(workload, path)
        arm["quality_from"] = "tflite"
    else:
        arm["quality"] = workload.evaluate(result.model)
        arm["quality_from"] = "keras"
    arm["arm_seconds"] = time.perf_counter() - began  # with loading, export and evaluation
    return arm


def levels_for(method: Method, workload: Workload, configuration: str) -> tuple:
    """The levels ``method`` runs at on ``workload`` in a ``"tiny"``, ``"quick"`` or
    ``"full"`` run."""
    if configuration == "tiny":
        return method.levels[:1]
    if configuration == "quick":
        return tuple(method.quick_levels)[: workload.quick_levels]
    return method.levels


def seeds_for(workload: Workload, seeds: Sequence[int]) -> list[int]:
    """The seeds a workload runs (latency-only workloads: the first; nothing to average)."""
    return list(seeds[:1]) if workload.task == "latency" else list(seeds)


def _dense_reference(
    workload: Workload, seeds: list[int], folder: Path, log: Callable[[str], Any]
) -> dict:
    """Each seed's trained starting model evaluated, and the first one exported (float32)."""
    log(f"[bench] workload {workload.name}: training/loading the starting models")
    runs = []
    for seed in seeds:
        model = workload.train(seed)
        runs.append({"seed": seed, "quality": workload.evaluate(model), **model_stats(model)})
    dense_file = folder / "dense_float32.tflite"
    dense = {
        "method": "dense",
        "runs": runs,
        "file": str(dense_file),
        **export_arm(workload.train(seeds[0]), dense_file, None, workload),
    }
    _summarise(dense, workload.metric)
    return dense


def _summarise(entry: dict, metric: str) -> None:
    values = [a["quality"].get(metric) if a.get("quality") else None for a in entry["runs"]]
    entry["quality_mean"], entry["quality_std"] = (
        _mean_std(values) if metric != "none" else (None, None)
    )
    first = next((a for a in entry["runs"] if a.get("error") is None), None)
    for key in (
        "params",
        "nonzero_params",
        "macs",
        "effective_macs",
        "tflite_bytes",
        "gzip_bytes",
        "verified",
        "max_abs_diff",
        "export",
        "sparse_encoding",
    ):
        if first is not None and key in first:
            entry[key] = first[key]
    entry["seconds_mean"] = statistics.fmean([a.get("seconds", 0.0) for a in entry["runs"]])
    entry["errors"] = [a["error"] for a in entry["runs"] if a.get("error")]


@dataclasses.dataclass
class RunSetup:
    """What one suite run uses, checked before anything runs (shared by the parallel runner)."""

    workloads: list
    methods: list
    seeds: list[int]
    rounds: int
    folder: Path
    temporary: Any
    configuration: str

    def document(self, **extra: Any) -> dict[str, Any]:
        """The results document's header (schema, time, command, seeds, machine)."""
        return {
            "schema": SCHEMA,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "configuration": self.configuration,
            "command": sys.argv,
            "seeds": self.seeds,
            **extra,
            "machine": machine_conditions(keras=keras.__version__),
            "workloads": [],
        }


def prepare_run(workloads, methods, quick, tiny, seeds, latency_rounds, folder) -> RunSetup:
    """Checks names and seeds and makes the file folder (a temporary one when None).

    Raises:
        ValueError: An unknown workload or method name, or an empty seed list.
    """
    chosen_workloads = select(workloads, list_workloads(quick=quick, tiny=tiny), "workloads")
    chosen_methods = select(methods, list_methods(), "methods")
    seeds = list(seeds) if seeds is not None else ([0] if tiny or quick else [0, 1, 2])
    if not seeds:
        raise ValueError("seeds must hold at least one seed; received []")
    rounds = latency_rounds or (2 if tiny else (5 if quick else 7))
    temporary = None
    if folder is None:
        temporary = tempfile.TemporaryDirectory(prefix="tfcompress-bench-")
        folder = temporary.name
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    configuration = "tiny" if tiny else ("quick" if quick else "full")
    return RunSetup(
        chosen_workloads, chosen_methods, seeds, rounds, folder, temporary, configuration
    )


def run_suite(
    workloads: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    *,
    quick: bool = False,
    tiny: bool = False,
    seeds: Sequence[int] | None = None,
    latency: bool = True,
    latency_rounds: int | None = None,
    folder: str | Path | None = None,
    verbose: int = 1,
    log: Callable[[str], Any] | None = None,
    dense: bool = True,
    starting_models: str | Path | None = None,
) -> dict:
    """Runs the suite and returns its results (the document ``tfcompress bench`` saves).

    Args:
        workloads: Workload names (None: all). See :func:`list_workloads`.
        methods: Method names (None: all registered). See :func:`list_methods`.
        quick: The quick configuration: fewer levels, shorter budgets.
        tiny: The test command's smoke configuration (1-2 epochs, 1 level).
        seeds: Seeds of the starting models (default 0, 1, 2; quick and tiny: 0).
        latency: Time the exported files (seed 0 of each arm) in LiteRT.
        latency_rounds: Rounds of the interleaved timing (default 7; quick 5; tiny 2).
        folder: Where the .tflite files go (default: a temporary folder).
        verbose: 1 shows a progress bar over arms, 2 one line per arm, 0 nothing.
        log: Where one-line messages go (default ``print`` to stderr).
        dense: Evaluate and export each workload's dense starting models (the
            reference every ratio divides by). A parallel run's method units
            leave it to the workload's first unit.
        starting_models: A folder where trained starting weights are kept and
            read back, so several processes train each one once.

    Returns:
        A JSON-able dict, schema ``SCHEMA``.

    Raises:
        ValueError: An unknown workload or method name, or an empty seed list.
    """
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    setup = prepare_run(workloads, methods, quick, tiny, seeds, latency_rounds, folder)
    chosen_workloads, chosen_methods, seeds = setup.workloads, setup.methods, setup.seeds
    rounds, folder, temporary = setup.rounds, setup.folder, setup.temporary

    def levels_of(method: Method, workload: Workload) -> tuple:
        return levels_for(method, workload, setup.configuration)

    def seeds_of(workload: Workload) -> list[int]:
        return seeds_for(workload, seeds)

    if starting_models is not None:
        for workload in chosen_workloads:
            if hasattr(workload, "share_starting_models"):
                workload.share_starting_models(starting_models)
    total = sum(
        len(levels_of(m, w)) * len(seeds_of(w))
        for w in chosen_workloads
        for m in chosen_methods
        if m.applies(w)
    )
    progress = _Progress(total, verbose)
    started = time.perf_counter()
    document = setup.document()
    for workload in chosen_workloads:
        workload_started = time.perf_counter()
        wfolder = folder / workload.name
        wfolder.mkdir(exist_ok=True)
        entry: dict[str, Any] = {
            "name": workload.name,
            "task": workload.task,
            "description": workload.description,
            "metric": workload.metric,
            "higher_is_better": workload.higher_is_better,
            "dense": _dense_reference(workload, seeds_of(workload), wfolder, log)
            if dense
            else None,
            "arms": [],
        }
        if dense and hasattr(workload, "anchor"):
            entry["anchor"] = workload.anchor()
        if dense:
            entry["context_free"] = workload.context_free_quality()
        for method in chosen_methods:
            if not method.applies(workload):
                continue
            for level in levels_of(method, workload):
                arm_entry = {
                    "method": method.name,
                    "family": method.family,
                    "level_name": method.level_name,
                    "level": level,
                    "finetunes": method.finetunes,
                    "runs": [],
                }
                for index, seed in enumerate(seeds_of(workload)):
                    try:
                        run = _run_arm(workload, method, level, seed, wfolder, index == 0)
                    except Exception as error:  # one failing arm must not end a long run
                        run = {
                            "seed": seed,
                            "error": f"{type(error).__name__}: {error}",
                            "traceback": traceback.format_exc(limit=6),
                        }
                        log(
                            f"[bench] {workload.name} {method.name} {level} seed {seed}: "
                            f"{run['error']}"
                        )
                    arm_entry["runs"].append(run)
                    progress.step(f"{workload.name} {method.name} {level} seed {seed}")
                _summarise(arm_entry, workload.metric)
                entry["arms"].append(arm_entry)
        entry["seconds"] = time.perf_counter() - workload_started  # arms, not the timing
        if latency and dense:
            time_workload(entry, workload, rounds, log)
        document["workloads"].append(entry)
    document["seconds"] = time.perf_counter() - started
    document["sanity"] = sanity_checks(document)
    if temporary is not None:
        temporary.cleanup()
    return document


def time_workload(entry: dict, workload: Workload, rounds: int, log: Callable[[str], Any]) -> None:
    """Times the dense file and each arm's first-seed file of ``entry``, interleaved.

    Adds ``latency`` to the entry (settings, machine conditions), to its dense
    reference and to every arm with a file.
    """
    files = {"dense": Path(entry["dense"]["file"])}
    for arm in entry["arms"]:
        first = arm["runs"][0] if arm["runs"] else {}
        if first.get("file"):
            files[f"{arm['method']}@{arm['level']}"] = Path(first["file"])
    if len(files) < 2:
        return
    log(f"[bench] workload {entry['name']}: timing {len(files)} files, interleaved")
    table = latency_table(files, workload.sample_input(), "dense", rounds=rounds)
    entry["latency"] = {"settings": table["settings"], "conditions": table["conditions"]}
    entry["dense"]["latency"] = table["arms"]["dense"]
    for arm in entry["arms"]:
        key = f"{arm['method']}@{arm['level']}"
        if key in table["arms"]:
            arm["latency"] = table["arms"][key]


def sanity_checks(document: dict) -> list[dict]:
    """ShrinkBench's sanity check: random pruning is worse than magnitude, per workload.

    For every workload with both ``random`` and ``magnitude_layer`` arms, each
    shared level compares the mean quality. A level where magnitude pruning is
    no better than the workload's context-free predictor (``context_free``:
    the majority class, or the byte frequencies of the language model) is
    marked ``collapsed`` and not compared: both arms have lost what the model
    knew, and which of two collapsed models is less bad says nothing. The
    check holds when magnitude is better at every other level (and at least
    one level is not collapsed).
    """
    checks = []
    for entry in document["workloads"]:
        by = {(a["method"], a["level"]): a for a in entry["arms"]}
        levels = sorted(
            {lvl for (m, lvl) in by if m == "random"}
            & {lvl for (m, lvl) in by if m == "magnitude_layer"}
        )
        if not levels:
            continue
        sign = 1.0 if entry["higher_is_better"] else -1.0
        floor = entry.get("context_free")
        rows = []
        for level in levels:
            rnd, mag = (
                by[("random", level)]["quality_mean"],
                by[("magnitude_layer", level)]["quality_mean"],
            )
            collapsed = floor is not None and mag is not None and sign * (mag - floor) <= 0
            ok = rnd is not None and mag is not None and sign * (mag - rnd) > 0
            row = {"level": level, "random": rnd, "magnitude_layer": mag, "holds": ok}
            if collapsed:
                row.update(holds=None, collapsed=True)
            rows.append(row)
        compared = [r for r in rows if not r.get("collapsed")]
        checks.append(
            {
                "workload": entry["name"],
                "context_free": floor,
                "levels": rows,
                "holds": bool(compared) and all(r["holds"] for r in compared),
            }
        )
    return checks


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def to_json_ready(document: dict) -> dict:
    """The document with NumPy scalars made plain and non-finite numbers as null."""
    return _jsonable(document)

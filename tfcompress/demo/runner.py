"""The ``tfcompress demo`` pipeline: train a float CNN, compress it every way, compare.

Techniques are plug-ins: each module in :mod:`tfcompress.demo.techniques`
defines ``TECHNIQUES``, a list of :class:`Technique`. The runner finds them,
runs each on a copy of the trained float model, exports it to TFLite, measures
it, and prints one table and writes JSON and a PNG plot.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import pkgutil
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras

from tfcompress import models as model_zoo
from tfcompress.core.io import write_text
from tfcompress.datasets import Split, load_digits
from tfcompress.reporting.table import format_table

__all__ = ["DemoContext", "DemoRow", "Technique", "TechniqueResult", "discover", "run_demo"]


@dataclasses.dataclass
class DemoContext:
    """What a technique gets.

    Attributes:
        data: The digits split.
        float_model: The trained float CNN. Do not change it: clone it
            (``clone_float_model()``) or build a new model.
        epochs: Fine-tuning budget in epochs for techniques that retrain.
        out_dir: Where the demo writes files (a technique may add its own).
        seed: The run's seed.
    """

    data: Split
    float_model: keras.Model
    epochs: int
    out_dir: Path
    seed: int = 0

    def clone_float_model(self) -> keras.Model:
        """A copy of the float model with its trained weights, compiled like it."""
        clone = keras.models.clone_model(self.float_model)
        clone.set_weights(self.float_model.get_weights())
        return clone


@dataclasses.dataclass
class TechniqueResult:
    """What a technique returns.

    Attributes:
        model: The compressed Keras model to evaluate and export.
        quantization: The TFLite export mode for it (None = float32).
        calibrate: Pass the training images as representative data.
        note: A short remark for the table (e.g. "80% sparse").
        stored_bytes: Size in a tfcompress format other than TFLite, if any.
    """

    model: keras.Model
    quantization: str | None = None
    calibrate: bool = False
    note: str = ""
    stored_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class Technique:
    """A named compression recipe the demo runs; lower ``order`` runs first."""

    name: str
    run: Callable[[DemoContext], TechniqueResult]
    order: int = 100


@dataclasses.dataclass
class DemoRow:
    technique: str
    keras_accuracy: float | None
    tflite_accuracy: float | None
    tflite_bytes: int | None
    gzip_bytes: int | None
    ratio_to_float: float | None
    latency_ms: float | None
    note: str = ""
    error: str | None = None
    gzip_ratio_to_float: float | None = None


def discover() -> list[Technique]:
    """Every ``TECHNIQUES`` entry of the modules in :mod:`tfcompress.demo.techniques`."""
    package = importlib.import_module("tfcompress.demo.techniques")
    found: list[Technique] = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found.extend(getattr(module, "TECHNIQUES", []))
    return sorted(found, key=lambda t: (t.order, t.name))


def _train_float_model(data: Split, epochs: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = model_zoo.digits_cnn(data.input_shape)
    print(f"Training the float digits CNN ({model.count_params():,} parameters, {epochs} epochs)")
    model_zoo.train_classifier(model, data, epochs=epochs, verbose=2)
    return model


def _run_technique(technique: Technique, ctx: DemoContext, index: int, total: int) -> DemoRow:
    from tfcompress.export.tflite import export

    print(f"\n[{index}/{total}] {technique.name}")
    start = time.perf_counter()
    keras.utils.set_random_seed(ctx.seed)
    result = technique.run(ctx)
    data = ctx.data
    keras_acc = model_zoo.accuracy(result.model, data.x_test, data.y_test)
    path = ctx.out_dir / f"{_slug(technique.name)}.tflite"
    report = export(
        result.model,
        path,
        quantization=result.quantization,
        representative_data=data.x_train if result.calibrate else None,
        verify_data=data.x_test,
        verify_labels=data.y_test,
        latency_runs=200,
        num_threads=1,
        verbose=0,
    )
    print(
        f"    Keras {keras_acc:.2%}, TFLite {report.tflite_accuracy:.2%}, "
        f"{report.bytes:,} bytes, {time.perf_counter() - start:.1f}s"
    )
    return DemoRow(
        technique=technique.name,
        keras_accuracy=keras_acc,
        tflite_accuracy=report.tflite_accuracy,
        tflite_bytes=report.bytes,
        gzip_bytes=report.gzip_bytes,
        ratio_to_float=None,
        latency_ms=report.latency_ms,
        note=result.note,
    )


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def run_demo(
    out_dir: str | Path = "demo_output",
    epochs: int = 12,
    fine_tune_epochs: int = 3,
    techniques: Sequence[str] | None = None,
    seed: int = 0,
) -> list[DemoRow]:
    """Runs the demo; returns its rows and writes ``results.json`` and ``size_vs_accuracy.png``.

    Args:
        out_dir: Output directory (created if needed).
        epochs: Epochs of float training.
        fine_tune_epochs: Epochs each retraining technique may use.
        techniques: Run only the techniques with these names (default: all).
        seed: Seed for training and every technique.
    """
    from tfcompress.reporting.plots import plot_size_vs_accuracy

    if epochs < 1 or fine_tune_epochs < 0:
        raise ValueError(
            f"epochs must be >= 1 and fine_tune_epochs >= 0, got {epochs} and {fine_tune_epochs}"
        )
    available = discover()
    if techniques:
        known = {t.name for t in available}
        unknown = [t for t in techniques if t not in known]
        if unknown:
            raise ValueError(f"unknown technique(s) {unknown}; available: {sorted(known)}")
        available = [t for t in available if t.name in techniques]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Many small models are traced in one process; TensorFlow's retracing advice is noise here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    data = load_digits()
    float_model = _train_float_model(data, epochs, seed)
    ctx = DemoContext(
        data=data, float_model=float_model, epochs=fine_tune_epochs, out_dir=out, seed=seed
    )

    rows: list[DemoRow] = []
    for i, technique in enumerate(available, 1):
        try:
            rows.append(_run_technique(technique, ctx, i, len(available)))
        except Exception as error:  # one failing technique must not hide the others
            traceback.print_exc()
            rows.append(
                DemoRow(
                    technique.name,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    error=f"{type(error).__name__}: {error}",
                )
            )

    baseline = next((r for r in rows if r.technique == "float32" and r.tflite_bytes), None)
    for row in rows:
        if baseline and row.tflite_bytes:
            row.ratio_to_float = row.tflite_bytes / baseline.tflite_bytes
            row.gzip_ratio_to_float = row.gzip_bytes / baseline.gzip_bytes

    _print_table(rows)
    write_text(out / "results.json", json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    plot_path = plot_size_vs_accuracy(
        # gzip size: what a download costs, and where pruning and clustering show their gain.
        [(r.technique, r.gzip_bytes, r.tflite_accuracy) for r in rows if r.error is None],
        out / "size_vs_accuracy.png",
        title="tfcompress demo: digits CNN",
        size_label="TFLite file size after gzip",
    )
    print(f"\nWrote {out / 'results.json'} and {plot_path}")
    failed = [r.technique for r in rows if r.error]
    if failed:
        print(f"Techniques that failed: {', '.join(failed)}")
    return rows


def _print_table(rows: list[DemoRow]) -> None:
    def pct(v: float | None) -> Any:
        return None if v is None else round(100 * v, 2)

    table = [
        [
            r.technique,
            pct(r.keras_accuracy),
            pct(r.tflite_accuracy),
            r.tflite_bytes,
            r.gzip_bytes,
            None if r.ratio_to_float is None else round(r.ratio_to_float, 3),
            None if r.gzip_ratio_to_float is None else round(r.gzip_ratio_to_float, 3),
            None if r.latency_ms is None else round(r.latency_ms * 1000, 1),
            r.error or r.note,
        ]
        for r in rows
    ]
    headers = [
        "technique",
        "Keras acc %",
        "TFLite acc %",
        "bytes",
        "gzip bytes",
        "ratio",
        "gzip ratio",
        "latency us",
        "note",
    ]
    print()
    print(
        format_table(table, headers, title="tfcompress demo: digits CNN (test split, 359 images)")
    )

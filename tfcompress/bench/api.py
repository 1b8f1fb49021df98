"""The two small interfaces of the benchmark suite: a workload and a method.

A **workload** owns a task: its data, a trained starting model per seed, a
quality metric and a fixed fine-tune budget. A **method** turns a trained model
into a compressed one at a given level (sparsity, bits, clusters, ...), using the
workload's fine-tune budget if it fine-tunes at all. The suite runs every method
at every level and seed on every workload it applies to, with the same budget,
and measures the result the same way; adding a method takes a function:

Example:
    >>> from tfcompress.bench import Compressed, register_method
    >>> @register_method("my_pruning", family="pruning", levels=(0.5, 0.7, 0.8, 0.9),
    ...                  level_name="sparsity", applies_to=("classification",))
    ... def my_pruning(model, run):
    ...     pruned = prune_somehow(model, run.level)
    ...     run.finetune(pruned, callbacks=[tfc.callbacks.KeepSparsity()])
    ...     return Compressed(pruned)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

__all__ = [
    "Compressed",
    "Method",
    "MethodRun",
    "Workload",
    "register_method",
    "registered_methods",
]

TASKS = ("classification", "language_model", "latency")


@dataclasses.dataclass
class Compressed:
    """What a method returns.

    Attributes:
        model: The compressed Keras model, evaluated as it is.
        export: How the suite exports it to TFLite for bytes and latency:
            ``None`` (float32), ``"float16"``, ``"dynamic"`` or ``"int8"``
            (the quantization argument of ``tfc.tflite_export.export``), or a
            callable ``(path) -> None`` that writes the file itself (a method
            whose file comes from elsewhere, e.g. TFMOT in a subprocess).
        quality: The quality if the method measured it itself (a subprocess
            method); ``None`` lets the suite evaluate ``model``.
        notes: Free text shown in the report (what was skipped, and why).
        calibrate: For ``export="int8"``: whether the converter gets calibration
            data. None: only when the model is not quantization-aware. True for
            a quantization-aware model whose transform left layers float
            (attention, LayerNorm): without ranges for those the converter keeps
            every matmul float (the LM's QAT file was 2.78 MB of float32).
    """

    model: keras.Model | None
    export: str | Callable[[str], None] | None = None
    quality: dict | None = None
    notes: str = ""
    calibrate: bool | None = None


@dataclasses.dataclass
class Workload:
    """A task with data, trained starting models, a metric and a fine-tune budget.

    Subclasses implement :meth:`data`, :meth:`build`, :meth:`train`,
    :meth:`evaluate` and :meth:`finetune`; the suite caches trained models.

    Attributes:
        name: Short identifier (``digits_cnn``).
        task: One of ``"classification"``, ``"language_model"``, ``"latency"``.
        description: One line for the report.
        metric: Name of the quality metric (``"accuracy"``, ``"bits_per_byte"``).
        higher_is_better: Whether a larger metric is better.
        quick: Whether this instance is the quick configuration.
        quick_levels: In the quick configuration, how many of each method's
            quick levels this workload runs (None: all of them); the slow
            workloads run one, so ``--quick`` stays within 15 minutes.
        relative_cost: Roughly how long its arms take next to the digits CNN's;
            parallel runs (``--jobs``) start the slowest workloads first.
    """

    name: str
    task: str
    description: str
    metric: str
    higher_is_better: bool
    quick: bool = False
    quick_levels: int | None = None
    relative_cost: float = 1.0

    def data(self) -> Any:
        """The workload's data: an object with ``x_train``, ``y_train``, ``x_test``, ``y_test``."""
        raise NotImplementedError

    def build(self) -> keras.Model:
        """A fresh, untrained model."""
        raise NotImplementedError

    def train(self, seed: int) -> keras.Model:
        """The trained starting model for ``seed`` (deterministic given the seed)."""
        raise NotImplementedError

    def evaluate(self, model: Any) -> dict:
        """``{metric: value, ...}`` of a Keras model or a TFLite runner on the test split."""
        raise NotImplementedError

    def finetune(self, model: keras.Model, callbacks: Sequence[Any] = (), seed: int = 0) -> None:
        """Fine-tunes ``model`` in place with the workload's fixed budget."""
        raise NotImplementedError

    def calibration(self, count: int, seed: int = 0) -> np.ndarray:
        """``count`` training inputs, for methods that calibrate (one-shot, int8 export)."""
        return self.calibration_pairs(count, seed)[0]

    def calibration_pairs(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``count`` training inputs with their targets (for gradient-based methods)."""
        data = self.data()
        rng = np.random.default_rng(seed)
        index = np.sort(
            rng.choice(len(data.x_train), size=min(count, len(data.x_train)), replace=False)
        )
        return data.x_train[index], data.y_train[index]

    def context_free_quality(self) -> float | None:
        """The test quality of a predictor that ignores its input (None: not defined).

        Classifiers: the accuracy of always answering the training set's most
        frequent class. The sanity check does not compare arms that are no better
        than this (both collapsed).
        """
        data = self.data()
        if self.task != "classification":
            return None
        majority = np.bincount(np.asarray(data.y_train).ravel()).argmax()
        return float(np.mean(np.asarray(data.y_test) == majority))

    def sample_input(self) -> np.ndarray:
        """One input batch (batch 1) for latency measurements."""
        return self.data().x_test[:1]

    def compile_for_finetune(self, model: keras.Model) -> None:
        """Compiles ``model`` with the workload's loss and fine-tune optimizer."""
        raise NotImplementedError


@dataclasses.dataclass
class MethodRun:
    """Everything a method gets besides the trained model.

    Attributes:
        workload: The workload (its data, calibration, fine-tune budget).
        level: The compression level to reach (what ``Method.level_name`` says).
        seed: The seed of this run (starting model, sampling, fine-tune order).
    """

    workload: Workload
    level: Any
    seed: int

    def finetune(self, model: keras.Model, callbacks: Sequence[Any] = (), compile: bool = True):
        """Fine-tunes ``model`` in place with the workload's fixed budget."""
        if compile:
            self.workload.compile_for_finetune(model)
        self.workload.finetune(model, callbacks=list(callbacks), seed=self.seed)

    def calibration(self, count: int = 256) -> np.ndarray:
        """``count`` training inputs drawn for this run's seed."""
        return self.workload.calibration(count, seed=self.seed)

    def calibration_pairs(self, count: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """``count`` training inputs and targets drawn for this run's seed."""
        return self.workload.calibration_pairs(count, seed=self.seed)


@dataclasses.dataclass(frozen=True)
class Method:
    """A compression method as the suite sees it.

    Attributes:
        name: Identifier used on the command line and in results.
        fn: ``(trained_model, MethodRun) -> Compressed``; must not modify the
            trained model (the suite passes a copy, but a method should clone).
        family: ``"baseline"``, ``"pruning"``, ``"quantization"``, ...
        levels: The full run's compression levels (at least four, ordered
            from mild to strong).
        quick_levels: The quick run's levels (a subset).
        level_name: What a level is (``"sparsity"``, ``"bits"``, ...).
        applies_to: The tasks (or workload names) it runs on.
        finetunes: Whether it uses the fine-tune budget (shown in the report).
        description: One line for the report, with the reference.
        relative_cost: Roughly how long one of its arms takes next to a plain
            prune-and-fine-tune arm; a parallel run hands out the costliest
            (workload, method) units first so the workers finish together.
    """

    name: str
    fn: Callable[[keras.Model, MethodRun], Compressed]
    family: str
    levels: tuple
    quick_levels: tuple
    level_name: str
    applies_to: tuple[str, ...]
    finetunes: bool = True
    description: str = ""
    relative_cost: float = 1.0

    def applies(self, workload: Workload) -> bool:
        return workload.task in self.applies_to or workload.name in self.applies_to


_METHODS: dict[str, Method] = {}


def register_method(
    name: str,
    *,
    family: str,
    levels: Sequence[Any],
    level_name: str,
    applies_to: Sequence[str],
    quick_levels: Sequence[Any] | None = None,
    finetunes: bool = True,
    description: str = "",
    relative_cost: float = 1.0,
) -> Callable[[Callable], Callable]:
    """Decorator: registers ``fn(model, run) -> Compressed`` as a suite method.

    Raises:
        ValueError: A name already registered, fewer than one level, an unknown
            task, or a ``relative_cost`` that is not a positive number.
    """
    if name in _METHODS:
        raise ValueError(f"a benchmark method named {name!r} is already registered")
    if not levels:
        raise ValueError(f"levels must name at least one level; received {levels!r}")
    if (
        isinstance(relative_cost, bool)
        or not isinstance(relative_cost, (int, float))
        or not relative_cost > 0
    ):
        raise ValueError(f"relative_cost must be a positive number; received {relative_cost!r}")
    unknown = [t for t in applies_to if t not in TASKS and not t.startswith("workload:")]
    if unknown:
        raise ValueError(
            f"applies_to must hold tasks from {TASKS} or 'workload:NAME'; received {unknown}"
        )

    def decorate(fn: Callable) -> Callable:
        _METHODS[name] = Method(
            name=name,
            fn=fn,
            family=family,
            levels=tuple(levels),
            quick_levels=tuple(quick_levels if quick_levels is not None else levels),
            level_name=level_name,
            applies_to=tuple(t.removeprefix("workload:") for t in applies_to),
            finetunes=finetunes,
            description=description or (fn.__doc__ or "").strip().splitlines()[0],
            relative_cost=float(relative_cost),
        )
        return fn

    return decorate


def registered_methods() -> list[Method]:
    """The methods registered so far (the built-in ones register when
    :mod:`tfcompress.bench.methods` is imported; use :func:`tfcompress.bench.list_methods`)."""
    return list(_METHODS.values())

"""The one timing harness of the benchmarks: arms interleaved, min and median, conditions recorded.

On a shared machine the load changes from second to second, so two arms timed one
after the other are timed under different conditions. ``time_arms`` calls the arms
round-robin (round 1: A, B, C; round 2: A, B, C; ...), so every arm sees the same
drift, and reports per arm the minimum (the best estimate of the cost itself: noise
only ever adds time) and the median (what a user typically sees) of its samples,
with ratios to a baseline arm measured in the same run. The load average before and
after and the CPU's instruction-set flags are recorded beside the numbers, because a
ratio measured under load or on another CPU is a different measurement.

This module imports only the standard library, so a benchmark's subprocess (for
example one running ``tf_keras``) can load it by file path without importing
tfcompress.

Example:
    >>> from tfcompress.bench.timing import time_arms
    >>> timing = time_arms({"sum": lambda: sum(range(1000)), "max": lambda: max(range(1000))},
    ...                    baseline="sum", rounds=3)
    >>> sorted(timing.arms)
    ['max', 'sum']
    >>> timing.arms["sum"].ratio_min
    1.0
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import numbers
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence

__all__ = ["ArmTiming", "Timing", "cpu_isa", "machine_conditions", "time_arms"]

REDUCTIONS = ("each", "median", "mean")


def _load_cpu_module():
    """``tfcompress/core/cpu.py``, loaded by its path (standard library only, like this file).

    A tf_keras subprocess loads this file by path without importing tfcompress, so the
    one CPU reader is reached the same way.
    """
    name = "tfcompress.core.cpu"
    if name in sys.modules:
        return sys.modules[name]
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "core", "cpu.py"
    )
    spec = importlib.util.spec_from_file_location("_tfcompress_cpu_by_path", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_cpu = _load_cpu_module()
ISA_FLAGS = _cpu.ISA_FLAGS
cpu_isa = _cpu.cpu_isa


@dataclasses.dataclass(frozen=True)
class ArmTiming:
    """One arm's samples and their statistics.

    Attributes:
        name: The arm's name.
        samples: Seconds per sample, in the order measured.
        min: The smallest sample (seconds).
        median: The median sample (seconds).
        ratio_min: ``min`` divided by the baseline arm's ``min`` (< 1: faster).
        ratio_median: ``median`` divided by the baseline arm's ``median``.
    """

    name: str
    samples: tuple[float, ...]
    min: float
    median: float
    ratio_min: float
    ratio_median: float

    def to_dict(self) -> dict:
        """A JSON-able dict (seconds, plus ``samples_s``)."""
        return {
            "min_s": self.min,
            "median_s": self.median,
            "ratio_min": self.ratio_min,
            "ratio_median": self.ratio_median,
            "samples_s": list(self.samples),
        }


@dataclasses.dataclass(frozen=True)
class Timing:
    """The result of ``time_arms``.

    Attributes:
        arms: ``ArmTiming`` per arm name, in the order the arms were given.
        baseline: The name of the arm the ratios divide by.
        settings: ``rounds``, ``number``, ``warmup``, ``reduce`` and ``self_timed``.
        conditions: ``machine_conditions()`` taken before the first call, plus
            ``load_average_after`` and ``seconds`` (the whole measurement's wall time).
    """

    arms: dict[str, ArmTiming]
    baseline: str
    settings: dict
    conditions: dict

    def min(self, name: str) -> float:
        """The arm's minimum, seconds."""
        return self._arm(name).min

    def median(self, name: str) -> float:
        """The arm's median, seconds."""
        return self._arm(name).median

    def ratio(self, name: str, to: str | None = None, stat: str = "min") -> float:
        """``name``'s statistic divided by ``to``'s (default: the baseline arm's).

        Args:
            name: The arm in the numerator.
            to: The arm in the denominator; the baseline when None.
            stat: ``"min"`` or ``"median"``.

        Returns:
            The ratio of the two arms' statistics (< 1 when ``name`` is faster).

        Raises:
            KeyError: An arm name that was not timed.
            ValueError: ``stat`` is not ``"min"`` or ``"median"``.
        """
        if stat not in ("min", "median"):
            raise ValueError(f"stat must be 'min' or 'median', got {stat!r}")
        numerator = getattr(self._arm(name), stat)
        denominator = getattr(self._arm(self.baseline if to is None else to), stat)
        return _divide(numerator, denominator)

    def to_dict(self) -> dict:
        """A plain dict (JSON-able) with every sample, statistic, setting and condition."""
        return {
            "baseline": self.baseline,
            "settings": dict(self.settings),
            "conditions": dict(self.conditions),
            "arms": {name: arm.to_dict() for name, arm in self.arms.items()},
        }

    def _arm(self, name: str) -> ArmTiming:
        if name not in self.arms:
            raise KeyError(f"no arm named {name!r}; timed arms: {list(self.arms)}")
        return self.arms[name]


def machine_conditions(**extra) -> dict:
    """What a timing depends on besides the code: load, cores, CPU, Python.

    Args:
        **extra: More entries to record (for example ``kernel_isa=kernel_isa()``, the
            instruction set the compiled kernels chose). JSON-able values only.

    Returns:
        A JSON-able dict: ``load_average`` (1, 5, 15 minutes; None where the OS has
        none), ``cpu_count``, ``cpu`` (``cpu_isa()``), ``platform``, ``python`` and
        ``extra``'s entries.
    """
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "load_average": load,
        "cpu_count": os.cpu_count(),
        "cpu": cpu_isa(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        **extra,
    }


def time_arms(
    arms: Mapping[str, Callable[[], object]],
    *,
    baseline: str | None = None,
    rounds: int = 7,
    number: int = 1,
    warmup: int = 1,
    reduce: str = "each",
    self_timed: bool = False,
    clock: Callable[[], float] = time.perf_counter,
    conditions: Mapping | None = None,
) -> Timing:
    """Times every arm round-robin and returns min, median and ratios per arm.

    Order of calls: first ``warmup`` untimed calls of each arm (arm by arm: tracing,
    allocation, caches), then ``rounds`` rounds; in each round every arm, in the
    given order, is called ``number`` times in a row.

    Args:
        arms: Name -> a callable taking no argument that does the work once and
            returns only when the work is done (force lazy results, e.g. ``.numpy()``).
        baseline: The arm the ratios divide by; the first arm when None.
        rounds: Rounds of round-robin calls (>= 1).
        number: Calls of one arm in a row within a round (>= 1).
        warmup: Untimed calls of each arm before the first round (>= 0).
        reduce: How one round's ``number`` calls of an arm become samples: ``"each"``
            (every call is a sample), ``"median"`` (one sample per round, the median
            of its calls: one interrupted call does not count), ``"mean"`` (one sample
            per round: the ``number`` calls timed as one block, divided by
            ``number``: for calls too short to time one by one).
        self_timed: Each arm returns its own measurement in seconds (a float or a
            sequence of floats, e.g. epoch times from a Keras callback), recorded
            instead of the wall time around the call; ``reduce="mean"`` then
            averages the returned values.
        clock: Seconds as a float (``time.perf_counter``; a fake one in tests).
        conditions: Extra entries for ``Timing.conditions`` (e.g. the kernel ISA).

    Returns:
        A ``Timing``; ``Timing.to_dict()`` is JSON-able.

    Raises:
        ValueError: No arms, an unknown baseline, ``rounds``/``number`` < 1,
            ``warmup`` < 0, an unknown ``reduce``, or a self-timed arm returning
            something that is not a finite non-negative number of seconds.

    Example:
        >>> import numpy as np
        >>> a = np.ones((64, 64), "float32")
        >>> timing = time_arms({"matmul": lambda: a @ a, "add": lambda: a + a},
        ...                    baseline="matmul", rounds=5, number=10, reduce="median")
        >>> timing.ratio("add") > 0
        True
    """
    names = list(arms)
    if not names:
        raise ValueError("arms is empty: give at least one name -> callable")
    for name, fn in arms.items():
        if not callable(fn):
            raise ValueError(f"arm {name!r} is {type(fn).__name__}, expected a callable")
    baseline = names[0] if baseline is None else baseline
    if baseline not in arms:
        raise ValueError(f"baseline {baseline!r} is not one of the arms {names}")
    for arg, value, least in (("rounds", rounds, 1), ("number", number, 1), ("warmup", warmup, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{arg} must be an integer >= {least}, got {value!r}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")

    before = machine_conditions(**dict(conditions or {}))
    started = clock()
    for name in names:
        for _ in range(warmup):
            arms[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            samples[name].extend(_one_round(arms[name], name, number, reduce, self_timed, clock))
    seconds = clock() - started
    after = machine_conditions()["load_average"]

    stats = {name: (min(s), statistics.median(s)) for name, s in samples.items()}
    base_min, base_median = stats[baseline]
    result = {
        name: ArmTiming(
            name=name,
            samples=tuple(samples[name]),
            min=low,
            median=mid,
            ratio_min=_divide(low, base_min),
            ratio_median=_divide(mid, base_median),
        )
        for name, (low, mid) in stats.items()
    }
    settings = {
        "rounds": rounds,
        "number": number,
        "warmup": warmup,
        "reduce": reduce,
        "self_timed": self_timed,
        "order": "round-robin",
    }
    return Timing(
        arms=result,
        baseline=baseline,
        settings=settings,
        conditions={**before, "load_average_after": after, "seconds": seconds},
    )


def _one_round(fn, name, number, reduce, self_timed, clock) -> list[float]:
    """One arm's samples from one round: ``number`` calls in a row, reduced."""
    if self_timed:
        values = [v for _ in range(number) for v in _returned_seconds(fn(), name)]
        if reduce == "each":
            return values
        return [statistics.median(values) if reduce == "median" else statistics.fmean(values)]
    if reduce == "mean":
        start = clock()
        for _ in range(number):
            fn()
        return [(clock() - start) / number]
    times = []
    for _ in range(number):
        start = clock()
        fn()
        times.append(clock() - start)
    return times if reduce == "each" else [statistics.median(times)]


def _returned_seconds(value, name) -> list[float]:
    values = list(value) if isinstance(value, Sequence) else [value]
    for v in values:
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(
                f"self-timed arm {name!r} returned {value!r}; expected seconds "
                "(a finite number >= 0, or a sequence of them)"
            )
    if not values:
        raise ValueError(f"self-timed arm {name!r} returned an empty sequence; expected seconds")
    return [float(v) for v in values]


def _divide(numerator: float, denominator: float) -> float:
    # A zero baseline (a fake clock, a no-op arm) has no meaningful ratio.
    return numerator / denominator if denominator > 0 else math.nan

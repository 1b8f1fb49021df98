"""Measured LiteRT latency: a timer that interleaves its arms, and a cache keyed by machine.

A latency budget is only as good as its latency numbers, and on a shared CPU a
number measured alone is a number measured under whatever else ran at the time.
:class:`LiteRTTimer` converts every Keras model it is given to a float32
``.tflite`` file, loads each in its own LiteRT interpreter (one thread by
default, batch 1, the default XNNPACK delegate), and then calls them
round-robin: in each round every model runs a block of invokes, long enough
(``min_block_s``) to be timed. A model's latency is its fastest block's mean
over the rounds, since noise only ever adds time. Only ``interpreter.invoke()``
is timed: the input is set once and outputs are not read, so the Python cost
of feeding and fetching arrays is not part of the number (a probe of one tiny
op, ``overhead_model()``, measures what is left of the call itself).

:class:`LatencyCache` keeps measured latencies in one JSON file per machine:
``<folder>/<machine hash>.json``, where the machine is the CPU model, its SIMD
instruction-set flags (from ``/proc/cpuinfo``), the interpreter's thread count
and the LiteRT and TensorFlow versions (:func:`machine_key`). Entries are keyed
by what was timed (layer classes and configurations without names, shapes).
The folder is ``cache_dir=``, else ``latency`` inside the project's cache
root: ``$TFCOMPRESS_CACHE_DIR`` (where compiled kernels go too),
``$XDG_CACHE_HOME/tfcompress`` or ``~/.cache/tfcompress``. Files are written with the one atomic writer
(:func:`tfcompress.core.io.write_text`); a file that cannot be read or parsed
is ignored with a warning and measured again, never an error.

Example:
    >>> timer = LiteRTTimer(rounds=5)
    >>> seconds = measure({"conv": lambda: small_conv_model}, timer, LatencyCache())
    >>> seconds["conv"] > 0
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress.core.cpu import cpu_isa
from tfcompress.core.io import write_text

__all__ = [
    "LatencyCache",
    "LiteRTTimer",
    "Timer",
    "cache_folder",
    "canonical_key",
    "machine_key",
    "measure",
    "overhead_model",
]

#: Environment variable naming the latency cache folder.
_BASE_ENV = "TFCOMPRESS_CACHE_DIR"  # the project's cache root (kernels use it too)
_FORMAT = 1

#: ``timer(models) -> seconds``: one latency per model, in order.
Timer = Callable[[Sequence[keras.Model]], Sequence[float]]


def machine_key(num_threads: int = 1, cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict:
    """What a latency measured here depends on besides the model.

    Args:
        num_threads: The interpreter's thread count.
        cpuinfo: A file in ``/proc/cpuinfo`` format.

    Returns:
        ``{"cpu": model name, "isa": [SIMD flags], "threads": n, "litert": version,
        "tensorflow": version}`` (``None`` for what cannot be read).
    """
    found = cpu_isa(cpuinfo)
    return {
        "cpu": found["model"],
        "isa": found["flags"],
        "threads": int(num_threads),
        "litert": _version("ai_edge_litert"),
        "tensorflow": _version("tensorflow"),
    }


def _version(package: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(package.replace("_", "-"))
    except Exception:
        return None


def canonical_key(description: Any) -> str:
    """A short stable key for a JSON-able description of what is timed."""
    text = json.dumps(description, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """The latency cache folder: ``cache_dir``, or ``latency`` in the project's cache root."""
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get(_BASE_ENV)
    if base:
        return Path(base) / "latency"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tfcompress" / "latency"


class LatencyCache:
    """Measured latencies (seconds) of one machine, in one JSON file.

    Args:
        folder: The cache folder (see :func:`cache_folder`).
        machine: The machine's :func:`machine_key` (default: this one, 1 thread).

    Attributes:
        path: The file.
        entries: ``{key: seconds}`` read from it (empty when it was unreadable).

    Example:
        >>> cache = LatencyCache("/tmp/latency")
        >>> cache.update({"k": 1e-5}); LatencyCache("/tmp/latency").entries["k"]
        1e-05
    """

    def __init__(self, folder: str | os.PathLike | None = None, machine: dict | None = None):
        self.machine = machine if machine is not None else machine_key()
        self.path = cache_folder(folder) / f"latency-{canonical_key(self.machine)[:16]}.json"
        self.entries: dict[str, float] = self._read()

    def _read(self) -> dict[str, float]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format") != _FORMAT:
                raise ValueError(f"expected format {_FORMAT}")
            if data.get("machine") != json.loads(json.dumps(self.machine)):
                raise ValueError("it was written for another machine")
            entries = data["entries"]
            if not isinstance(entries, dict) or not all(
                isinstance(v, (int, float)) and np.isfinite(v) and v >= 0 for v in entries.values()
            ):
                raise ValueError("its entries are not {key: seconds}")
            return {str(k): float(v) for k, v in entries.items()}
        except (OSError, ValueError, KeyError, TypeError) as error:
            warnings.warn(
                f"latency cache {str(self.path)!r} is unreadable ({error}); ignoring it, "
                "latencies are measured again and the file is rewritten",
                RuntimeWarning,
                stacklevel=3,
            )
            return {}

    def get(self, key: str) -> float | None:
        return self.entries.get(key)

    def update(self, values: Mapping[str, float]) -> None:
        """Adds ``values`` and writes the file atomically (merged with what is on disk now)."""
        self.entries.update({k: float(v) for k, v in values.items()})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                on_disk = self._read()  # another process may have added entries meanwhile
            merged = {**on_disk, **self.entries}
            text = json.dumps(
                {"format": _FORMAT, "machine": self.machine, "entries": merged}, indent=0
            )
            write_text(self.path, text)
        except OSError as error:
            warnings.warn(
                f"latency cache {str(self.path)!r} could not be written ({error}); the "
                "measurements are used but not kept",
                RuntimeWarning,
                stacklevel=2,
            )


def overhead_model() -> keras.Model:
    """A model of one tiny op: its latency is what an invoke costs beyond the ops' work."""
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.ReLU()(inputs), name="invoke_overhead")


class LiteRTTimer:
    """Times Keras models as float32 LiteRT files, interleaved, minimum over rounds.

    Args:
        num_threads: Interpreter threads (1: the single-core latency).
        rounds: Rounds of round-robin blocks; a model's latency is its fastest block.
        min_block_s: Seconds one block of invokes should last (invokes shorter than
            a clock tick are timed in blocks).
        max_invokes: The most invokes in one block.
        warmup: Untimed invokes per model before the first round.
        seed: Seed of the random inputs.

    Example:
        >>> LiteRTTimer(rounds=3)([model_a, model_b])   # seconds per invoke
        [0.00021, 0.00013]
    """

    cache_name = "litert"  # what the cache records as the timer

    def __init__(
        self,
        num_threads: int = 1,
        rounds: int = 7,
        min_block_s: float = 0.002,
        max_invokes: int = 200,
        warmup: int = 3,
        seed: int = 0,
    ):
        for name, value, least in (
            ("num_threads", num_threads, 1),
            ("rounds", rounds, 1),
            ("max_invokes", max_invokes, 1),
            ("warmup", warmup, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if not min_block_s > 0:
            raise ValueError(f"min_block_s must be > 0 seconds, got {min_block_s!r}")
        self.num_threads = num_threads
        self.rounds = rounds
        self.min_block_s = float(min_block_s)
        self.max_invokes = max_invokes
        self.warmup = warmup
        self.seed = seed

    def _invoke(self, model: keras.Model) -> Callable[[], None]:
        from ai_edge_litert.interpreter import Interpreter

        from tfcompress.export.converter import convert

        flatbuffer = convert(model, verbose=0)
        interpreter = Interpreter(model_content=flatbuffer, num_threads=self.num_threads)
        interpreter.allocate_tensors()
        rng = np.random.default_rng(self.seed)
        for detail in interpreter.get_input_details():
            shape = [max(1, int(d)) for d in detail["shape"]]
            dtype = np.dtype(detail["dtype"])
            value = rng.random(shape) if dtype.kind == "f" else rng.integers(0, 2, shape)
            interpreter.set_tensor(detail["index"], value.astype(dtype))
        return interpreter.invoke

    def __call__(self, models: Sequence[keras.Model]) -> list[float]:
        invokes = [self._invoke(model) for model in models]
        counts = []
        for invoke in invokes:
            start = time.perf_counter()
            for _ in range(max(1, self.warmup)):
                invoke()
            each = (time.perf_counter() - start) / max(1, self.warmup)
            counts.append(int(np.clip(self.min_block_s / max(each, 1e-9), 1, self.max_invokes)))
        best = [float("inf")] * len(invokes)
        for _ in range(self.rounds):
            for i, (invoke, count) in enumerate(zip(invokes, counts)):
                start = time.perf_counter()
                for _ in range(count):
                    invoke()
                best[i] = min(best[i], (time.perf_counter() - start) / count)
        return best


def measure(
    builders: Mapping[str, Callable[[], keras.Model]],
    timer: Timer,
    cache: LatencyCache | None = None,
    *,
    chunk: int = 32,
    progress: Any = None,
) -> dict[str, float]:
    """Seconds per key: from the cache, or built and timed (interleaved, in chunks).

    Args:
        builders: ``{key: () -> keras.Model}``; a model is only built when its key is
            not cached.
        timer: The :data:`Timer` (e.g. :class:`LiteRTTimer`).
        cache: Where to read and keep results (None: always measure, keep nothing).
        chunk: Models timed together (interleaved); each holds an interpreter.
        progress: A ``keras.utils.Progbar`` advanced by one per key, or None.

    Returns:
        ``{key: seconds}`` for every key of ``builders``.

    Raises:
        ValueError: If the timer returns a wrong count or a negative/non-finite time.
    """
    found: dict[str, float] = {}
    missing = []
    for key in builders:
        cached = cache.get(key) if cache is not None else None
        if cached is None:
            missing.append(key)
        else:
            found[key] = cached
    if progress is not None and found:
        progress.add(len(found))
    for start in range(0, len(missing), chunk):
        keys = missing[start : start + chunk]
        seconds = list(timer([builders[key]() for key in keys]))
        if len(seconds) != len(keys) or not all(
            np.isfinite(s) and s >= 0 for s in np.asarray(seconds, float)
        ):
            raise ValueError(
                f"the timer returned {seconds!r} for {len(keys)} models; expected one finite "
                "number of seconds >= 0 per model"
            )
        new = dict(zip(keys, (float(s) for s in seconds)))
        found.update(new)
        if cache is not None:
            cache.update(new)
        if progress is not None:
            progress.add(len(keys))
    return {key: found[key] for key in builders}

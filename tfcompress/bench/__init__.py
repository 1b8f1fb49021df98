"""The standard benchmark of tfcompress and the timing harness its benchmarks share.

``python3 run.py bench suite [--quick]`` (or ``tfcompress bench suite``) runs
every method at several levels and seeds on fixed workloads (digits CNN,
LeNet-300-100, a byte-level transformer language model on real text,
MobileNetV2-style blocks, keras.applications MobileNetV2 for size and
latency) and writes a versioned JSON document, a markdown report and plots.
A method joins with :func:`register_method`; see :mod:`tfcompress.bench.api`.

``timing`` holds the one timing harness every benchmark uses: arms called
round-robin, min and median per arm, ratios to a baseline arm measured in the
same run, and the machine's conditions (load average, CPU instruction sets)
recorded with the result.
"""

from typing import TYPE_CHECKING

# The names load on first use: the command line imports tfcompress.bench.cli to build
# its parser, and that must not start Keras (``tfcompress --help`` stays instant and
# TensorFlow's start-up logs stay quiet until the command sets their level).
_HOME = {
    "ArmTiming": "timing",
    "Compressed": "api",
    "Method": "api",
    "MethodRun": "api",
    "Timing": "timing",
    "Workload": "api",
    "cpu_isa": "timing",
    "get_method": "catalog",
    "list_methods": "catalog",
    "machine_conditions": "timing",
    "register_method": "api",
    "time_arms": "timing",
}

if TYPE_CHECKING:
    from tfcompress.bench.api import Compressed, Method, MethodRun, Workload, register_method
    from tfcompress.bench.catalog import get_method, list_methods
    from tfcompress.bench.timing import ArmTiming, Timing, cpu_isa, machine_conditions, time_arms


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'tfcompress.bench' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"tfcompress.bench.{_HOME[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ArmTiming",
    "Compressed",
    "Method",
    "MethodRun",
    "Timing",
    "Workload",
    "cpu_isa",
    "get_method",
    "list_methods",
    "machine_conditions",
    "register_method",
    "time_arms",
]

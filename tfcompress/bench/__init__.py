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

from tfcompress.bench.api import Compressed, Method, MethodRun, Workload, register_method
from tfcompress.bench.catalog import get_method, list_methods
from tfcompress.bench.timing import ArmTiming, Timing, cpu_isa, machine_conditions, time_arms

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

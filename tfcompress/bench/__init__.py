"""Benchmarking support shared by ``benchmarks/`` and the benchmark suite.

``timing`` holds the one timing harness every benchmark uses: arms called
round-robin, min and median per arm, ratios to a baseline arm measured in the
same run, and the machine's conditions (load average, CPU instruction sets)
recorded with the result.
"""

from tfcompress.bench.timing import ArmTiming, Timing, cpu_isa, machine_conditions, time_arms

__all__ = [
    "ArmTiming",
    "Timing",
    "cpu_isa",
    "machine_conditions",
    "time_arms",
]

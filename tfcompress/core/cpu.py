"""What CPU this is: its model name and the instruction sets that decide which kernels run.

Standard library only: ``tfcompress.bench.timing`` loads this file by path in
subprocesses that must not import tfcompress (tf_keras ones). Used by the
timing harness (conditions recorded beside every timing) and by the latency
cache of ``tfc.allocate.sparsity`` (one cache file per machine).
"""

from __future__ import annotations

import os
import platform

__all__ = ["ISA_FLAGS", "cpu_isa"]

# The flags that decide which kernels run (XNNPACK, TF's oneDNN, our packed binary ops).
ISA_FLAGS = (
    "sse4_2",
    "popcnt",
    "fma",
    "avx",
    "avx2",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_vpopcntdq",
    "amx_int8",
    "asimd",
    "asimddp",
    "sve",
)


def cpu_isa(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict:
    """The CPU's model name and which of the kernel-relevant instruction sets it has.

    Args:
        cpuinfo: A file in ``/proc/cpuinfo`` format.

    Returns:
        ``{"model": str | None, "flags": [...]}``: the flags of ``ISA_FLAGS`` the first
        processor lists (x86 ``flags`` or Arm ``Features``), sorted; ``flags`` is None
        where the file cannot be read (not Linux).
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return {"model": platform.processor() or None, "flags": None}
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if model is None and key in ("model name", "cpu model", "hardware"):
            model = value.strip()
        elif flags is None and key in ("flags", "features"):
            flags = set(value.split())
    return {"model": model, "flags": sorted(set(ISA_FLAGS) & (flags or set()))}

"""Argument checks of the one-shot entry points, all run before anything is copied or changed.

Every error names the argument, the value received and what is expected.
Numbers must be numbers (a string such as ``"0.5"`` is refused), as in the
pruning package.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from tfcompress.oneshot.grid import SUPPORTED_BITS
from tfcompress.oneshot.hessian import MAX_DAMPING
from tfcompress.oneshot.solvers import NMPattern
from tfcompress.pruning.validation import check_fraction, check_int

__all__ = [
    "check_bits",
    "check_choice",
    "check_damping",
    "check_group_size",
    "parse_pattern",
    "resolve_sparsity",
]

_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` lower-cased if it is one of ``choices``, else ValueError listing them."""
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    raise ValueError(f"{name}={value!r} is not supported; expected one of {', '.join(choices)}")


def parse_pattern(pattern: Any) -> NMPattern | None:
    """``"unstructured"`` -> None, ``"N:M"`` -> :class:`NMPattern` (keep N of every M).

    Raises:
        ValueError: For another value or a malformed N:M string (needs integers 0 < N < M).
    """
    if isinstance(pattern, str) and pattern.strip().lower() == "unstructured":
        return None
    if isinstance(pattern, str) and ":" in pattern:
        match = _NM.match(pattern)
        if not match:
            raise ValueError(
                f"pattern={pattern!r} is not a valid N:M pattern; expected two integers like "
                "'2:4' (keep N weights in every group of M consecutive inputs)"
            )
        n, m = int(match.group(1)), int(match.group(2))
        if not 0 < n < m:
            raise ValueError(
                f"pattern={pattern!r}: N:M needs 0 < N < M (e.g. '2:4'), got N={n}, M={m}"
            )
        return NMPattern(n, m)
    raise ValueError(
        f"pattern={pattern!r} is not supported; expected 'unstructured' or an N:M string such "
        "as '2:4'"
    )


def resolve_sparsity(sparsity: Any, pattern: NMPattern | None) -> float:
    """The sparsity to prune: given, or 0.5 (unstructured) / ``1 - N/M`` (N:M) when None.

    Raises:
        ValueError: Outside [0, 1), not a number, or (N:M) different from ``1 - N/M``.
    """
    if sparsity is None:
        return 0.5 if pattern is None else pattern.sparsity
    value = check_fraction("sparsity", sparsity)
    if pattern is not None and not math.isclose(value, pattern.sparsity, abs_tol=1e-9):
        raise ValueError(
            f"sparsity={sparsity!r} does not match pattern '{pattern}', which prunes exactly "
            f"{pattern.sparsity:g} (1 - N/M); pass sparsity=None or {pattern.sparsity:g}"
        )
    return value


def check_bits(bits: Any) -> int:
    """``bits`` if it is one of :data:`~tfcompress.oneshot.grid.SUPPORTED_BITS`."""
    if (
        isinstance(bits, bool)
        or not isinstance(bits, numbers.Integral)
        or bits not in SUPPORTED_BITS
    ):
        raise ValueError(
            f"bits={bits!r} is not supported; expected one of {list(SUPPORTED_BITS)} (integer "
            "weight grids that TFLite stores in int8 tensors)"
        )
    return int(bits)


def check_group_size(group_size: Any) -> int | None:
    """None, or an integer >= 1 (columns sharing one grid step)."""
    return check_int("group_size", group_size, minimum=1, none_ok=True)


def check_damping(damping: Any) -> float:
    """A relative dampening in (0, MAX_DAMPING]."""
    if (
        isinstance(damping, bool)
        or not isinstance(damping, numbers.Real)
        or not math.isfinite(damping)
        or not 0 < damping <= MAX_DAMPING
    ):
        raise ValueError(
            f"damping={damping!r} must be a number in (0, {MAX_DAMPING:g}] (a fraction of the "
            "mean diagonal of the Hessian; 0.01 is usual)"
        )
    return float(damping)

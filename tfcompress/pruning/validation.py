"""Argument checks shared by every pruning entry point.

Numbers must be given as numbers: a string such as ``"0.8"`` or ``"90"`` is refused
everywhere in the pruning package (a config read from JSON or YAML carries real
numbers; a string usually means a value that was never parsed). NumPy scalars are
accepted; booleans are not numbers here. Every error names the argument, the value
received and what is expected.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["check_fraction", "check_int", "check_positive"]


def _refuse(name: str, value: Any, expected: str) -> ValueError:
    kind = " (a string)" if isinstance(value, str) else ""
    return ValueError(f"{name} must be {expected}, got {value!r}{kind}")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int = 0, none_ok: bool = False) -> int | None:
    """``value`` as an ``int >= minimum`` (``None`` passes when ``none_ok``).

    Args:
        name: The argument's name, for the error.
        value: What the caller passed.
        minimum: The smallest accepted value.
        none_ok: Whether ``None`` is accepted (and returned).

    Returns:
        The integer (or None).

    Raises:
        ValueError: For a non-integer (strings and floats included) or a value below ``minimum``.

    Example:
        >>> check_int("end_step", 90, minimum=1)
        90
    """
    if value is None and none_ok:
        return None
    expected = f"an integer >= {minimum}" + (" or None" if none_ok else "")
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise _refuse(name, value, expected)
    if int(value) < minimum:
        raise _refuse(name, value, expected)
    return int(value)


def check_fraction(name: str, value: Any) -> float:
    """``value`` as a float in [0, 1) (a sparsity).

    Raises:
        ValueError: For a non-number (strings included), NaN, or a value outside [0, 1).

    Example:
        >>> check_fraction("target_sparsity", 0.8)
        0.8
    """
    if not _is_number(value) or math.isnan(float(value)) or not 0.0 <= float(value) < 1.0:
        raise _refuse(name, value, "a number in [0, 1)")
    return float(value)


def check_positive(name: str, value: Any, upper: float | None = None) -> float:
    """``value`` as a float > 0 (and <= ``upper`` when given).

    Raises:
        ValueError: For a non-number (strings included), NaN, or a value out of range.

    Example:
        >>> check_positive("power", 3)
        3.0
    """
    expected = "a number > 0" if upper is None else f"a number in (0, {upper:g}]"
    if not _is_number(value) or not float(value) > 0.0:
        raise _refuse(name, value, expected)
    if upper is not None and float(value) > upper:
        raise _refuse(name, value, expected)
    return float(value)

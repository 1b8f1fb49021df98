"""The catalogue of suite methods: the built-in ones (imported here, which registers
them) plus any registered by the user before the suite runs."""

from __future__ import annotations

from tfcompress.bench import methods  # noqa: F401  (registers the built-in methods)
from tfcompress.bench.api import Method, registered_methods

__all__ = ["get_method", "list_methods"]


def list_methods() -> list[Method]:
    """Every registered method, in registration order."""
    return registered_methods()


def get_method(name: str) -> Method:
    """The registered method ``name``.

    Raises:
        ValueError: No method has that name (the known names are listed).
    """
    known = {m.name: m for m in list_methods()}
    if name not in known:
        raise ValueError(f"unknown benchmark method {name!r}; known: {sorted(known)}")
    return known[name]

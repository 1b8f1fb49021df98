"""The report of :func:`~tfcompress.compact.replace.compact_model`: one row per replaced convolution."""

from __future__ import annotations

import dataclasses
from typing import Any

from tfcompress.core.table import format_skipped, format_table

__all__ = ["CompactLayer", "CompactReport"]


@dataclasses.dataclass
class CompactLayer:
    """One replaced convolution: its block, cost before/after and how close the block is.

    ``kernel_error`` is ``||W - W'||_F / ||W||_F`` with ``W'`` the KxK kernel
    the block computes (its linear map composed back, in NumPy; exact for all
    three kinds). ``output_error`` is ``||f'(x) - f(x)|| / ||f(x)||`` for the
    layer ``f`` and block ``f'`` (activation included) on random normal inputs
    of the layer's input shape, computed by the Keras layers themselves.
    """

    name: str
    kind: str
    conv: str  # e.g. "3x3 4->8 s2 same"
    config: str  # e.g. "rank=2"
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    kernel_error: float
    output_error: float


@dataclasses.dataclass
class CompactReport:
    """What :func:`compact_model` did; ``str(report)`` is a table."""

    kind: str
    layers: list[CompactLayer]
    skipped: list[tuple[str, str, str]]  # (name, type, reason)
    params_before: int
    params_after: int
    fine_tune_loss: list[float] | None = None  # training loss per epoch (student + teacher)

    @property
    def param_ratio(self) -> float:
        """Parameters of the compact model over those of the original."""
        return self.params_after / self.params_before if self.params_before else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "param_ratio": self.param_ratio}

    def to_string(self) -> str:
        rows = [
            [x.name, x.conv, x.config, x.params_before, x.params_after, x.macs_before,
             x.macs_after, x.kernel_error, x.output_error]
            for x in self.layers
        ]  # fmt: skip
        text = format_table(
            rows,
            ["layer", "conv", "block", "params", "-> params", "MACs", "-> MACs",
             "kernel err", "output err"],
            title=(
                f"compact_model ({self.kind}): {self.params_before:,} -> "
                f"{self.params_after:,} parameters ({self.param_ratio:.3f}x)"
            ),
        )  # fmt: skip
        text += format_skipped(self.skipped)
        if self.fine_tune_loss is not None:
            losses = ", ".join(f"{v:.4g}" for v in self.fine_tune_loss)
            text += f"\nfine-tune loss per epoch: {losses}"
        return text

    def __str__(self) -> str:
        return self.to_string()

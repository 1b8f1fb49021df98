"""What an allocation returns: one choice per layer, with predicted cost and error.

A plan is the solver's answer written down: for every layer the chosen option
(a channel fraction, a sparsity, a bit width), what that option is predicted to
cost (seconds of measured latency, bytes of the exported file) and to lose
(the error the criterion measured), next to the totals and the budget. It
prints as a table, converts to the knobs of the training-time tools and
applies itself in one shot; subclasses (:class:`~tfcompress.allocation.
sparsity.SparsityPlan`, :class:`~tfcompress.allocation.bits.BitsPlan`) say
how.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from tfcompress.core.table import format_table

__all__ = ["LayerChoice", "Plan"]


@dataclasses.dataclass(frozen=True)
class LayerChoice:
    """One layer's line of a plan.

    Attributes:
        layer: The layer's name (a path such as ``"block0/ffn_up"`` inside nested models).
        choice: The chosen option (a fraction or a number of bits).
        cost: Its predicted cost, in the plan's ``cost_unit``.
        error: Its predicted error, in the plan's ``error_name`` units.
        options: Every option the layer was offered, in order.
        option_costs: The cost of each option.
        option_errors: The error of each option.
    """

    layer: str
    choice: Any
    cost: float
    error: float
    options: tuple = ()
    option_costs: tuple = ()
    option_errors: tuple = ()


@dataclasses.dataclass
class Plan:
    """Per-layer choices under one budget (the base of every allocation's plan).

    Attributes:
        layers: One :class:`LayerChoice` per allocated layer, in model order.
        budget: The target total cost, in ``cost_unit``.
        fixed_cost: What the rest of the model costs (layers the plan does
            not change), in ``cost_unit``; included in :attr:`total_cost`.
        dense_cost: The uncompressed model's total cost, in ``cost_unit``.
        cost_name: What the cost is (``"latency"``, ``"file bytes"``).
        cost_unit: Its unit (``"ms"``, ``"B"``).
        choice_name: What a choice is (``"channel fraction"``, ``"bits"``).
        error_name: What the error is (``"loss increase"``, ...).
        notes: Free text: how costs were measured, what was left out and why.
    """

    layers: list[LayerChoice]
    budget: float
    fixed_cost: float
    dense_cost: float
    cost_name: str
    cost_unit: str
    choice_name: str
    error_name: str
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def total_cost(self) -> float:
        """The predicted cost of the whole compressed model."""
        return float(self.fixed_cost + sum(layer.cost for layer in self.layers))

    @property
    def smallest_cost(self) -> float:
        """The cost with every layer at its cheapest option (the lowest budget it reaches)."""
        return float(self.fixed_cost + sum(min(layer.option_costs) for layer in self.layers))

    @property
    def total_error(self) -> float:
        """The sum of the chosen options' errors (what the solver minimised)."""
        return float(sum(layer.error for layer in self.layers))

    @property
    def choices(self) -> dict[str, Any]:
        """``{layer name: choice}``."""
        return {layer.layer: layer.choice for layer in self.layers}

    def __getitem__(self, name: str) -> Any:
        for layer in self.layers:
            if layer.layer == name:
                return layer.choice
        raise KeyError(f"layer {name!r} is not in this plan; it has {list(self.choices)}")

    def __len__(self) -> int:
        return len(self.layers)

    def _rows(self) -> list[Sequence[Any]]:
        return [
            (layer.layer, layer.choice, float(layer.cost), float(layer.error))
            for layer in self.layers
        ]

    def __str__(self) -> str:
        headers = (
            "layer",
            self.choice_name,
            f"{self.cost_name} ({self.cost_unit})",
            self.error_name,
        )
        title = f"{type(self).__name__}: {len(self.layers)} layers"
        table = format_table(self._rows(), headers, title=title)
        ratio = self.total_cost / self.dense_cost if self.dense_cost else float("nan")
        lines = [
            table,
            f"rest of the model: {self.fixed_cost:,.4g} {self.cost_unit}",
            f"total: {self.total_cost:,.4g} {self.cost_unit} predicted "
            f"({ratio:.3f} x dense {self.dense_cost:,.4g}); budget {self.budget:,.4g} "
            f"{self.cost_unit}; total {self.error_name} {self.total_error:.4g}",
        ]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self.layers)} layers, {self.total_cost:.4g} of "
            f"{self.budget:.4g} {self.cost_unit})"
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the plan (what :meth:`to_json` writes)."""
        data = dataclasses.asdict(self)
        data["kind"] = type(self).__name__
        data["total_cost"] = self.total_cost
        data["total_error"] = self.total_error
        return data

    def to_json(self) -> str:
        """The plan as JSON text (layers, choices, costs, errors, budget, notes)."""
        return json.dumps(self.as_dict(), indent=1, default=float)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """The plan :meth:`as_dict` wrote (totals are recomputed, not read)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["layers"] = [
            LayerChoice(**{k: tuple(v) if isinstance(v, list) else v for k, v in layer.items()})
            for layer in data["layers"]
        ]
        return cls(**values)

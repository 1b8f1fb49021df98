"""Callbacks for ``model.fit``: pruning, sparse training, distillation, schedules."""

__all__: list[str] = []

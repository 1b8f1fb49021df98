"""Pure, typed ``step -> value`` schedules (pruning sparsity, learning rate)."""

__all__: list[str] = []

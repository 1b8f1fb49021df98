"""Pure, typed ``step -> value`` schedules (pruning sparsity, learning rate)."""

from tfcompress.schedules.pruning import ConstantSparsity, PolynomialSparsity, SparsitySchedule

__all__ = [
    "ConstantSparsity",
    "PolynomialSparsity",
    "SparsitySchedule",
]

"""Pure, typed ``step -> value`` schedules (pruning sparsity, learning rate)."""

from tfcompress.learning_rate.schedules import OneCycle as OneCycle
from tfcompress.learning_rate.schedules import Rewinding as Rewinding
from tfcompress.learning_rate.schedules import WarmupCosine as WarmupCosine
from tfcompress.learning_rate.schedules import one_cycle as one_cycle
from tfcompress.learning_rate.schedules import rewound_step as rewound_step
from tfcompress.learning_rate.schedules import warmup_cosine as warmup_cosine
from tfcompress.pruning.schedules import ConstantSparsity as ConstantSparsity
from tfcompress.pruning.schedules import PolynomialSparsity as PolynomialSparsity
from tfcompress.pruning.schedules import SparsitySchedule as SparsitySchedule

__all__ = [
    "ConstantSparsity",
    "OneCycle",
    "PolynomialSparsity",
    "Rewinding",
    "SparsitySchedule",
    "WarmupCosine",
    "one_cycle",
    "rewound_step",
    "warmup_cosine",
]

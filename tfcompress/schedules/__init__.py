"""Pure, typed ``step -> value`` schedules (pruning sparsity, learning rate)."""

from tfcompress.schedules.learning_rate import OneCycle as OneCycle
from tfcompress.schedules.learning_rate import Rewinding as Rewinding
from tfcompress.schedules.learning_rate import WarmupCosine as WarmupCosine
from tfcompress.schedules.learning_rate import one_cycle as one_cycle
from tfcompress.schedules.learning_rate import rewound_step as rewound_step
from tfcompress.schedules.learning_rate import warmup_cosine as warmup_cosine
from tfcompress.schedules.pruning import ConstantSparsity, PolynomialSparsity, SparsitySchedule

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

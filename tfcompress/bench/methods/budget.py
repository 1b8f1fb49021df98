"""How many optimizer steps a workload's fine-tune budget has, so that a method can
place its schedule (pruning updates, drop/regrow steps) inside it."""

from __future__ import annotations

from tfcompress.bench.api import Workload

__all__ = ["budget_steps", "schedule_steps"]


def budget_steps(workload: Workload) -> int:
    """The number of optimizer steps of ``workload``'s fine-tune.

    The language model fine-tunes for ``finetune_steps`` batches (one pass
    over sampled windows); a classifier for ``finetune_epochs`` passes over
    its training split in whole batches of ``batch_size`` (the partial one is dropped).

    Raises:
        TypeError: For a workload that declares neither (its budget is unknown).
    """
    steps = getattr(workload, "finetune_steps", None)
    if steps is not None:
        return int(steps)
    epochs = getattr(workload, "finetune_epochs", None)
    if epochs is not None:
        per_epoch = len(workload.data().x_train) // int(workload.batch_size)  # whole batches
        return int(epochs) * per_epoch
    raise TypeError(
        f"workload {workload.name!r} ({type(workload).__name__}) declares neither "
        "finetune_steps nor finetune_epochs, so its fine-tune budget in steps is unknown"
    )


def schedule_steps(workload: Workload, fraction: float = 2 / 3, updates: int = 8) -> tuple:
    """``(end_step, frequency)`` of a schedule that ends at ``fraction`` of the budget.

    The last third of the budget (by default) is left to recover at the final
    sparsity, as Zhu & Gupta (2017) do; ``updates`` mask updates fit before
    ``end_step`` (at least one step apart).
    """
    steps = budget_steps(workload)
    end = max(1, int(fraction * steps))
    return end, max(1, end // updates)

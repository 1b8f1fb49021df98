"""A workaround for Keras 3's ``model.fit`` under ``MultiWorkerMirroredStrategy``.

Keras 3 (checked on 3.10-3.15 with TensorFlow 2.21) fails in two places when
``fit`` runs with several worker processes (keras-team/keras issue 20585):

1. ``TensorFlowTrainer._maybe_symbolic_build`` reduces the first batch over
   workers (``strategy.reduce("MEAN", (x, y), axis=None)``) only to learn its
   shapes; the multi-worker strategy cannot convert that tuple of per-replica
   values and raises. The local replica's slice has the same shapes.
2. ``reduce_per_replica`` averages every log with ``strategy.reduce(...,
   axis=0)``, and the logs are scalars: there is no axis 0.

:func:`fix_keras_multiworker_fit` replaces both with versions that do what Keras
means (build from the local slice; average scalars over workers). It patches
Keras' private TensorFlow trainer, so it is opt-in, reversible
(``fix_keras_multiworker_fit(False, False)``) and checked against each Keras release by
``tests/test_distribute_multiworker.py``, which asserts the defect is still there
(so the workaround can go when Keras fixes it) and that, with it, tfcompress'
callbacks and layers train to the single-worker weights (within 1e-5).
"""

from __future__ import annotations

from typing import Any

__all__ = ["fix_keras_multiworker_fit"]

_ORIGINAL: dict[str, Any] = {}


def _trainer() -> Any:
    from keras.src.backend.tensorflow import trainer  # private: the code being patched

    if not _ORIGINAL:
        _ORIGINAL["symbolic_build"] = trainer.TensorFlowTrainer._maybe_symbolic_build
        _ORIGINAL["reduce_per_replica"] = trainer.reduce_per_replica
    return trainer


def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
    """Keras' method, building from the local replica's batch instead of a cross-worker reduce."""
    import keras
    import tensorflow as tf

    if self._distribute_strategy is None:
        return
    if iterator is not None:
        for _, _, it in iterator:
            batch = next(it)
            data_batch = keras.tree.map_structure(
                lambda v: (
                    self.distribute_strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v
                ),
                batch,
            )
            break
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _reduce_per_replica(values: Any, strategy: Any, reduction: str = "auto") -> Any:
    """Keras' function, averaging the (scalar) logs over workers without an axis."""
    import keras

    trainer = _trainer()
    if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
        return keras.tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
    return _ORIGINAL["reduce_per_replica"](values, strategy, reduction)


def fix_keras_multiworker_fit(symbolic_build: bool = True, reduce_logs: bool = True) -> None:
    """Lets ``model.fit`` run under ``tf.distribute.MultiWorkerMirroredStrategy`` (Keras 3).

    Call it once per worker process, before ``fit``. It replaces two functions
    of Keras' TensorFlow trainer (see the module docstring); single-device and
    ``MirroredStrategy`` training take the same paths as before.

    Args:
        symbolic_build: Build from the local replica's first batch (fix 1).
        reduce_logs: Average the scalar logs over workers without an axis
            (fix 2). ``fix_keras_multiworker_fit(False, False)`` puts Keras'
            own functions back.

    Raises:
        TypeError: If an argument is not a bool.

    Example:
        >>> strategy = tf.distribute.MultiWorkerMirroredStrategy()  # TF_CONFIG set
        >>> tfc.distribute.fix_keras_multiworker_fit()
        >>> with strategy.scope():
        ...     model = build(); model.compile(...)
        >>> model.fit(x, y, callbacks=[tfc.callbacks.GradualPruning(0.8)])

    Reference: keras-team/keras issue 20585 (``model.fit`` under
    MultiWorkerMirroredStrategy fails since Keras 3 / TF 2.16).
    """
    for name, value in (("symbolic_build", symbolic_build), ("reduce_logs", reduce_logs)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    trainer = _trainer()
    trainer.TensorFlowTrainer._maybe_symbolic_build = (
        _maybe_symbolic_build if symbolic_build else _ORIGINAL["symbolic_build"]
    )
    trainer.reduce_per_replica = (
        _reduce_per_replica if reduce_logs else _ORIGINAL["reduce_per_replica"]
    )

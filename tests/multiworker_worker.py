"""One worker of a two-process ``MultiWorkerMirroredStrategy`` cluster on 127.0.0.1.

Run by ``tests/test_distribute_multiworker.py``, twice at once (``TF_CONFIG`` names
the cluster and this worker's index), each process with one CPU device, so the
strategy has two replicas, one per process. Every worker prints one
``RESULTS {json}`` line and writes its final weights and masks to
``OUT/<case>.w<index>.npz``.

``compare`` mode:

1. ``keras-team/keras#20585``: a plain Keras ``model.fit`` under the strategy, first
   as Keras ships, then with only the first of the two fixes below; the errors are
   reported (the test asserts they are still the known ones).
2. The workaround (``tfc.distribute.fix_keras_multiworker_fit``) is applied and every case of
   ``tests/distribute_cases.py`` named on the command line is trained under the
   strategy; the chief (worker 0) also trains it on its own device with the same
   global batch and reports the differences.
3. ``backup``: GradualPruning for 4 epochs with ``BackupAndRestore``, uninterrupted.
4. After the ``RESULTS`` line, the same run again in a fresh backup directory:
   worker 1 kills itself (SIGKILL) after step ``KILL_AT``, mid-epoch; worker 0 is
   then stuck in the next collective and the test kills it.

``resume`` mode: the restarted cluster runs step 4's ``fit`` again; ``BackupAndRestore``
restores the last epoch's state and the run finishes.

Usage: ``TF_CONFIG=... python tests/multiworker_worker.py compare|resume OUT [case ...]``
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf

# Before any other TensorFlow op: the strategy starts this process's gRPC server.
STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
TASK = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
CHIEF = TASK == 0

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import distribute_cases as dc  # noqa: E402

from tfcompress.distribute import fix_keras_multiworker_fit  # noqa: E402

EPOCHS = 4  # the BackupAndRestore run: 4 epochs of 2 global batches of 32
KILL_AT = 5  # worker 1 dies after this step (epoch 3 of 4, its first batch)


# --- keras-team/keras#20585: model.fit under MultiWorkerMirroredStrategy (Keras 3.15)


def plain_fit() -> list[float]:
    """The smallest Keras script: a Dense model fitted for 2 steps under the strategy."""
    with STRATEGY.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(optimizer="sgd", loss="mse")
    x = np.arange(64, dtype="float32").reshape(16, 4) / 64
    history = model.fit(x, x[:, :3], batch_size=8, epochs=1, verbose=0, shuffle=False)
    return [float(v) for v in history.history["loss"]]


def keras_20585() -> dict:
    """Runs ``plain_fit`` as Keras ships, then with the first fix only; reports the errors."""
    found = {}
    for name, fixes in (("as_shipped", (False, False)), ("symbolic_build_fixed", (True, False))):
        fix_keras_multiworker_fit(*fixes)
        try:
            found[name] = {"ok": True, "loss": plain_fit()}
        except Exception as error:  # the defect, reported for the test to pin down
            found[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"[:600]}
    fix_keras_multiworker_fit()
    found["fixed"] = {"ok": True, "loss": plain_fit()}
    return found


# --- the cases


def save(out: Path, name: str, trained: dc.Trained) -> None:
    arrays = {f"w{i}": w for i, w in enumerate(dc.weights(trained))}
    arrays.update({f"m{i}": m for i, m in enumerate(dc.masks(trained))})
    np.savez(out / f"{name}.w{TASK}.npz", **arrays)


def run_case(out: Path, name: str) -> dict:
    case = dc.prepare(name)
    single = dc.train(case) if CHIEF else None
    multi = dc.train(case, STRATEGY.scope)
    save(out, name, multi)
    result = dc.compare(case, single, multi) if CHIEF else {}
    result["replicas"] = STRATEGY.num_replicas_in_sync
    result["n_variables"] = len(multi.model.variables)
    result["n_distributed"] = sum(
        isinstance(v.value, tf.distribute.DistributedValues) for v in multi.model.variables
    )
    return result


# --- BackupAndRestore


class KillAt(keras.callbacks.Callback):
    """SIGKILLs this process after training step ``step`` (nothing is cleaned up)."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            print(f"KILLED step={self.step} batch={batch}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


def backup_run(backup_dir: Path | None, kill_at: int | None = None, scope=None) -> dc.Trained:
    """GradualPruning for ``EPOCHS`` epochs of 2 steps, with ``BackupAndRestore``.

    Each worker backs up to its own directory (Keras 3 writes the same file names
    from every worker; on a shared file system they would overwrite each other).
    """
    case = dc.prepare("pruning_unstructured")
    extra: list = []
    if backup_dir is not None:
        extra.append(keras.callbacks.BackupAndRestore(str(backup_dir / f"worker{TASK}")))
    if kill_at is not None and TASK == 1:
        extra.append(KillAt(kill_at))
    return dc.train(
        case,
        scope or STRATEGY.scope,
        x=dc.X[: 2 * dc.BATCH],
        y=dc.Y[: 2 * dc.BATCH],
        epochs=EPOCHS,
        callbacks=extra,
    )


def backup_result(out: Path, name: str, trained: dc.Trained) -> dict:
    save(out, name, trained)
    callback = dc.masked(trained)
    return {
        "epochs_run": len(trained.history["loss"]),
        "iterations": int(trained.model.optimizer.iterations.numpy()),
        "sparsity": callback.sparsity_logs().get("sparsity"),
    }


def main(mode: str, out: str, names: list[str]) -> None:
    out_dir = Path(out)
    results: dict = {"task": TASK, "replicas": STRATEGY.num_replicas_in_sync}
    if mode == "compare":
        results["keras_20585"] = keras_20585()
        for name in names:
            with dc.reported(results, name) as result:
                result.update(run_case(out_dir, name))
        with dc.reported(results, "backup_straight") as result:
            result.update(backup_result(out_dir, "backup_straight", backup_run(out_dir / "a")))
        if CHIEF:
            with dc.reported(results, "backup_single") as result:
                single = backup_run(None, scope=tf.distribute.get_strategy().scope)
                result.update(backup_result(out_dir, "backup_single", single))
        print("RESULTS " + json.dumps(results), flush=True)
        backup_run(out_dir / "b", kill_at=KILL_AT)  # worker 1 never returns from this
        print("UNREACHED: the interrupted run finished", flush=True)
    elif mode == "resume":
        fix_keras_multiworker_fit()
        backups = sorted(p.name for p in (out_dir / "b" / f"worker{TASK}").iterdir())
        with dc.reported(results, "backup_resumed") as result:
            trained = backup_run(out_dir / "b")
            result.update(backup_result(out_dir, "backup_resumed", trained))
            result["backup_files"] = backups
        print("RESULTS " + json.dumps(results), flush=True)
    else:
        raise SystemExit(f"mode must be compare or resume, got {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])

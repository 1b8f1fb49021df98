"""Does a teacher help a small or compressed student on digits? Mean over 3 seeds.

Arms (same seeds, same data, same epochs, same optimizer):
  (a) a small CNN student trained alone,
  (b) the same student with ``DistillationTeacher`` (teacher: the digits CNN),
  (c) a compressed student, alone and with the teacher. The compressed student
      is a 4x-narrower CNN; when ``tfc.callbacks.GradualPruning`` exists (issue
      4) the small CNN pruned to 80% during training is added, alone and with
      the teacher, in the same ``fit``.
A last arm adds the warm-up + cosine schedule to (b).

Prints a table (mean, std, min, max accuracy over seeds) and writes
``benchmarks/results/distillation.json``. The training-time ratio of (b) to (a)
is the minimum epoch time of each, measured in this run (noisy on shared cores).

Run: ``PYTHONPATH=. python benchmarks/distillation.py [--epochs 20] [--seeds 0 1 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import tfcompress as tfc
from tfcompress.callbacks import DistillationTeacher
from tfcompress.datasets import load_digits
from tfcompress.models import accuracy, digits_cnn, train_classifier
from tfcompress.reporting.table import format_table

BATCH = 32


def small_cnn(width: int = 8, dense: int = 32) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(dense, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ],
        name=f"cnn_w{width}_d{dense}",
    )


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def _pruning_callback(steps: int):
    cls = getattr(tfc.callbacks, "GradualPruning", None)
    if cls is None:
        return None
    return cls(0.8, begin_step=0, end_step=int(steps * 0.7), frequency=max(steps // 20, 1))


def _sparsity(model: keras.Model) -> float:
    kernels = [w for w in model.trainable_weights if "kernel" in w.path]
    zeros = sum(int(np.sum(keras.ops.convert_to_numpy(k) == 0)) for k in kernels)
    return zeros / sum(int(np.prod(k.shape)) for k in kernels)


def run_arm(
    name,
    build,
    data,
    teacher,
    seed,
    epochs,
    *,
    distill,
    pruning=False,
    schedule=False,
    temperature=2.0,
    alpha=0.5,
):
    keras.utils.set_random_seed(seed)
    model = build()
    steps = epochs * int(np.ceil(len(data.x_train) / BATCH))
    lr = (
        tfc.schedules.WarmupCosine(3e-3, decay_steps=steps - steps // 10, warmup_steps=steps // 10)
        if schedule
        else 1e-3
    )
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    timer = EpochTimer()
    callbacks = [timer]
    if distill:
        callbacks.append(DistillationTeacher(teacher, temperature=temperature, alpha=alpha))
    if pruning:
        callbacks.append(_pruning_callback(steps))
    train_classifier(
        model, data, epochs=epochs, batch_size=BATCH, callbacks=callbacks, compile_model=False
    )
    return {
        "arm": name,
        "seed": seed,
        "accuracy": accuracy(model, data.x_test, data.y_test),
        "params": model.count_params(),
        "sparsity": _sparsity(model),
        "min_epoch_s": min(timer.times[1:] or timer.times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--teacher-epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--only", nargs="*", default=None, help="run only these arm names")
    parser.add_argument("--out", default="benchmarks/results/distillation.json")
    args = parser.parse_args()

    data = load_digits()
    keras.utils.set_random_seed(100)
    teacher = digits_cnn()
    train_classifier(teacher, data, epochs=args.teacher_epochs)
    teacher_acc = accuracy(teacher, data.x_test, data.y_test)
    print(
        f"Teacher: digits CNN, {teacher.count_params():,} params, test accuracy {teacher_acc:.2%}"
    )

    arms = [
        ("small CNN alone", lambda: small_cnn(8, 32), {}),
        ("small CNN + teacher", lambda: small_cnn(8, 32), {"distill": True}),
        (
            "small CNN + teacher + warm-up cosine",
            lambda: small_cnn(8, 32),
            {"distill": True, "schedule": True},
        ),
        ("narrow CNN (4x fewer) alone", lambda: small_cnn(2, 8), {}),
        ("narrow CNN (4x fewer) + teacher", lambda: small_cnn(2, 8), {"distill": True}),
    ]
    pruning_available = hasattr(tfc.callbacks, "GradualPruning")
    if pruning_available:
        arms += [
            ("small CNN pruned 80% alone", lambda: small_cnn(8, 32), {"pruning": True}),
            (
                "small CNN pruned 80% + teacher",
                lambda: small_cnn(8, 32),
                {"pruning": True, "distill": True},
            ),
        ]
    if args.only:
        arms = [a for a in arms if a[0] in args.only]
    runs = []
    for seed in args.seeds:  # arms interleaved within each seed
        for name, build, kw in arms:
            kw = {"distill": False, "temperature": args.temperature, "alpha": args.alpha, **kw}
            result = run_arm(name, build, data, teacher, seed, args.epochs, **kw)
            print(f"  seed {seed}  {name:40s} {result['accuracy']:.4f}")
            runs.append(result)

    rows, summary = [], []
    for name, _, _ in arms:
        accs = np.array([r["accuracy"] for r in runs if r["arm"] == name])
        first = next(r for r in runs if r["arm"] == name)
        epoch_s = min(r["min_epoch_s"] for r in runs if r["arm"] == name)
        entry = {
            "arm": name,
            "params": first["params"],
            "sparsity": first["sparsity"],
            "mean": float(accs.mean()),
            "std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
            "min": float(accs.min()),
            "max": float(accs.max()),
            "per_seed": accs.tolist(),
            "min_epoch_s": epoch_s,
        }
        summary.append(entry)
    base = {e["arm"]: e for e in summary}
    gains = {}
    for alone, taught in [
        ("small CNN alone", "small CNN + teacher"),
        ("narrow CNN (4x fewer) alone", "narrow CNN (4x fewer) + teacher"),
        ("small CNN pruned 80% alone", "small CNN pruned 80% + teacher"),
    ]:
        if alone in base and taught in base:
            per_seed = np.array(base[taught]["per_seed"]) - np.array(base[alone]["per_seed"])
            gains[taught] = {"mean_gain": float(per_seed.mean()), "per_seed": per_seed.tolist()}
    step_ratio = (
        base["small CNN + teacher"]["min_epoch_s"] / base["small CNN alone"]["min_epoch_s"]
        if "small CNN + teacher" in base and "small CNN alone" in base
        else None
    )
    for e in summary:
        gain = gains.get(e["arm"], {}).get("mean_gain")
        rows.append(
            [
                e["arm"],
                e["params"],
                e["sparsity"],
                e["mean"],
                e["std"],
                e["min"],
                e["max"],
                None if gain is None else gain * 100,
            ]
        )
    print()
    print(
        format_table(
            rows,
            ["student", "params", "sparsity", "mean acc", "std", "min", "max", "gain (pts)"],
            title=f"Distillation on digits, {len(args.seeds)} seeds, {args.epochs} epochs, "
            f"T={args.temperature}, alpha={args.alpha} (teacher {teacher_acc:.2%})",
        )
    )
    if step_ratio is not None:
        print(f"Epoch-time ratio, teacher vs alone (min epoch, same run): {step_ratio:.2f}x")
    if not pruning_available:
        print("GradualPruning is not available in this checkout: pruned arms skipped.")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "teacher": {"params": teacher.count_params(), "accuracy": teacher_acc},
                "epochs": args.epochs,
                "seeds": args.seeds,
                "temperature": args.temperature,
                "alpha": args.alpha,
                "arms": summary,
                "gains": gains,
                "epoch_time_ratio_teacher_vs_alone": step_ratio,
                "pruning_available": pruning_available,
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()

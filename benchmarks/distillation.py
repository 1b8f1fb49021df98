"""Does a teacher help a compressed student on digits? Mean over 3 seeds.

Protocol (test images are used for the final numbers only):

0. Evaluation. By default stratified 5-fold cross-validation over all 1,797
   images (``--folds 5``): steps 1-3 run once per fold, each fold's models
   train on the other four fifths, and an arm's accuracy for a seed is the share
   of all 1,797 images it classifies right (each scored by the model that did
   not see it). ``--folds 0`` uses the fixed 1,438/359 split of
   ``load_digits()`` instead: 359 test images make one image 0.28 points, too
   coarse for gains under a point.
1. Teacher. The average of the logits of ``--teacher-members`` (3) digits CNNs
   trained with different seeds and random +-1 pixel shifts of their images
   (``--teacher-shift 1``; Hinton et al. 2015 trained their MNIST teacher with
   jitter too). It knows something the students cannot read off the raw
   training images: what shifted digits look like.
2. Selection (nested: it never sees the test images). The training images are
   cut into a fit part (80%) and a validation part (20%), stratified. A teacher
   is trained on the fit part; for each candidate ``(temperature, alpha)`` of a
   small grid the selection student (``--select-arm``, default the 80%-pruned
   student) is trained on the fit part with that teacher, and also alone, over
   ``--select-seeds``. The candidate with the best mean validation accuracy
   wins (``alpha = 0``, i.e. no teacher, is not a candidate: we report what the
   best teacher setting does, not whether to use one).
3. Test. The teacher is retrained on all the training images; every arm is
   trained on them with the chosen setting, seeds ``--seeds``, and scored once
   on the test images.

Steps 2 and 3 run once per ``--student-data`` regime: the students' images as
they are (``original``, the default), and with random +-1 pixel shifts
(``shifted``, the same augmentation as the teacher's, for both arms; the
teacher then sees the same shifted batch as the student, i.e. "function
matching", Beyer et al. 2022). The second regime answers the fair question "is
the teacher worth more than giving the student the teacher's augmentation?".

Students (``--student``): by default a two-layer 400-400 MLP on the flattened
images (``MLP 400-400``, 190,410 parameters: 2.5x fewer than the teacher and
~39x fewer multiply-adds; Hinton et al.'s MNIST student was 800-800). ``MLP``
(LeNet-300-100) and ``small CNN`` (4.5k parameters) are the regimes of earlier
rounds (see ``docs/distillation.md``). Arms (same
seeds, data, epochs, optimizer and schedule for every arm): the student alone
and + teacher, plain, pruned to 80% during training (``GradualPruning``), and
with 4-bit weights (``quantize_model(..., "int4")``, quantization-aware from
scratch). Every arm and teacher member trains with Adam, a warm-up + cosine
rate (``tfc.schedules.WarmupCosine``, peak 3e-3), ``--epochs`` epochs, batch
``--batch``. ``--mixup A`` mixes every batch with itself (Beta(A, A) weights,
labels mixed too; off by default, it lowered validation accuracy when tried).

Prints the selections and a test table per regime (mean, std, min, max over
seeds, and the teacher's gain as the mean of per-seed differences) and writes
``benchmarks/results/distillation.json`` (per-fold runs included).

Run: ``PYTHONPATH=. python benchmarks/distillation.py [--folds 5] [--seeds 0 1 2]
[--student-data original shifted]`` (defaults: 56 minutes on 2 cores).
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
import tensorflow as tf

import tfcompress as tfc
from tfcompress.callbacks import DistillationTeacher, GradualPruning
from tfcompress.core.io import write_text
from tfcompress.datasets import Split, load_digits
from tfcompress.models import accuracy, digits_cnn
from tfcompress.reporting.table import format_table

GRID = [(4.0, 0.5), (4.0, 0.9)]


def small_cnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="small_cnn",
    )


def mlp() -> keras.Model:
    """LeNet-300-100 on the flattened 8x8 images (Hinton et al.'s MNIST student)."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(300, activation="relu", name="dense1"),
            keras.layers.Dense(100, activation="relu", name="dense2"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="mlp",
    )


def wide_mlp(width: int = 400) -> keras.Model:
    """Two wide ReLU layers on the flattened images (Hinton et al.'s MNIST student was 800-800)."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(width, activation="relu", name="dense1"),
            keras.layers.Dense(width, activation="relu", name="dense2"),
            keras.layers.Dense(10, name="logits"),
        ],
        name=f"mlp_{width}_{width}",
    )


ARCHITECTURES = {"MLP 400-400": wide_mlp, "MLP": mlp, "small CNN": small_cnn}


def _students() -> dict:
    # name -> (builder, prune to 80%)
    out = {}
    for arch, build in ARCHITECTURES.items():
        out[arch] = (build, False)
        out[f"{arch} pruned 80%"] = (build, True)
        out[f"{arch} 4-bit weights"] = (lambda b=build: tfc.quantize_model(b(), "int4"), False)
    return out


STUDENTS = _students()


class LogitAverage(keras.Model):
    """A teacher that averages the logits of independently trained members."""

    def __init__(self, members, **kwargs):
        super().__init__(**kwargs)
        self.members = list(members)

    def call(self, x, training=False):
        logits = [m(x, training=False) for m in self.members]
        return logits[0] if len(logits) == 1 else keras.ops.mean(keras.ops.stack(logits), axis=0)


def split_off_validation(data: Split, fraction: float = 0.2, seed: int = 0) -> Split:
    """Stratified fit/validation split of the TRAINING data (the test split is not touched)."""
    rng = np.random.default_rng(seed)
    fit_idx, val_idx = [], []
    for label in np.unique(data.y_train):
        idx = rng.permutation(np.flatnonzero(data.y_train == label))
        cut = round(fraction * len(idx))
        val_idx.extend(idx[:cut])
        fit_idx.extend(idx[cut:])
    fit_idx, val_idx = np.sort(fit_idx), np.sort(val_idx)
    return Split(
        data.x_train[fit_idx], data.y_train[fit_idx], data.x_train[val_idx], data.y_train[val_idx]
    )


def fold_splits(data: Split, folds: int, seed: int = 0) -> list[Split]:
    """Stratified ``folds``-fold cross-validation over ALL images (train and test together).

    Fold ``k`` tests on the k-th fifth (say) of every class and trains on the
    rest, so every image is a test image exactly once.
    """
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=int)
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        fold_of[idx] = np.arange(len(idx)) % folds
    return [
        Split(x[fold_of != k], y[fold_of != k], x[fold_of == k], y[fold_of == k])
        for k in range(folds)
    ]


def _shift(x, y):
    # Random shift by -1, 0 or +1 pixel on each axis, zero fill.
    n, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    rows = tf.random.uniform([n], 0, 3, tf.int32)[:, None] + tf.range(h)[None]
    cols = tf.random.uniform([n], 0, 3, tf.int32)[:, None] + tf.range(w)[None]
    padded = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(padded, cols, axis=2, batch_dims=1), y


def _mixup(concentration: float, classes: int = 10):
    """Mixes each batch with a shuffled copy of itself (Zhang et al. 2018).

    Labels become the same convex mix of one-hot labels; a teacher sees the
    mixed images, so it labels points the training set does not hold.
    """

    def mix(x, y):
        n = tf.shape(x)[0]
        g1 = tf.random.gamma([n], concentration)
        g2 = tf.random.gamma([n], concentration)
        lam = g1 / (g1 + g2)
        perm = tf.random.shuffle(tf.range(n))
        onehot = tf.one_hot(y, classes)
        lx = tf.reshape(lam, [-1, 1, 1, 1])
        ly = lam[:, None]
        x = lx * x + (1.0 - lx) * tf.gather(x, perm)
        return x, ly * onehot + (1.0 - ly) * tf.gather(onehot, perm)

    return mix


def dataset(x, y, batch: int, shift: bool, seed: int, mixup: float = 0.0) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype("int32")))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch)
    ds = ds.map(_shift) if shift else ds
    return (ds.map(_mixup(mixup)) if mixup else ds).prefetch(2)


def train(model, data: Split, args, seed: int, callbacks=(), shift: bool = False) -> float:
    steps = args.epochs * int(np.ceil(len(data.x_train) / args.batch))
    lr = tfc.schedules.WarmupCosine(
        args.lr, decay_steps=steps - steps // 20, warmup_steps=steps // 20
    )
    mixup = args.mixup
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True)
        if mixup
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(
        dataset(data.x_train, data.y_train, args.batch, shift, seed, mixup),
        epochs=args.epochs,
        verbose=0,
        shuffle=False,  # the dataset reshuffles itself every epoch
        callbacks=list(callbacks),
    )
    return time.perf_counter() - start


def train_teacher(data: Split, args) -> keras.Model:
    # "small CNN"/"MLP": a teacher of the student's own architecture (born-again networks).
    build = digits_cnn if args.teacher == "digits CNN" else ARCHITECTURES[args.teacher]
    members = []
    for i in range(args.teacher_members):
        keras.utils.set_random_seed(100 + i)
        member = build()
        train(member, data, args, seed=100 + i, shift=bool(args.teacher_shift))
        members.append(member)
    teacher = LogitAverage(members)
    teacher(data.x_test[:1])
    return teacher


def run_arm(student, teacher, data, args, seed, temperature, alpha, shift) -> dict:
    build, prune = STUDENTS[student]
    keras.utils.set_random_seed(seed)
    model = build()
    steps = args.epochs * int(np.ceil(len(data.x_train) / args.batch))
    callbacks = []
    if prune:
        callbacks.append(
            GradualPruning(
                0.8, begin_step=0, end_step=int(steps * 0.7), frequency=max(1, steps // 40)
            )
        )
    if teacher is not None:
        callbacks.append(DistillationTeacher(teacher, temperature=temperature, alpha=alpha))
    seconds = train(model, data, args, seed, callbacks, shift=shift)
    return {
        "student": student,
        "teacher": teacher is not None,
        "seed": seed,
        "accuracy": accuracy(model, data.x_test, data.y_test),
        "train_accuracy": accuracy(model, data.x_train, data.y_train),
        "params": model.count_params(),
        "sparsity": _sparsity(model),
        "seconds": seconds,
    }


def _sparsity(model: keras.Model) -> float:
    kernels = [w for w in model.trainable_weights if w.path.endswith("kernel")]
    zeros = sum(int(np.sum(keras.ops.convert_to_numpy(k) == 0)) for k in kernels)
    return zeros / sum(int(np.prod(k.shape)) for k in kernels)


def _teacher_confidence(teacher, x, temperatures) -> dict:
    """Mean top probability of softmax(teacher / T): near 1 means near one-hot soft targets."""
    logits = teacher.predict(x, verbose=0)
    out = {}
    for t in temperatures:
        probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits / t, axis=-1))
        out[float(t)] = float(probs.max(axis=-1).mean())
    return out


def _stats(values) -> dict:
    a = np.asarray(values, dtype=float)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
        "per_seed": a.tolist(),
    }


def select(val: Split, teacher, args, shift: bool) -> tuple[tuple[float, float], list[dict]]:
    """Chooses (temperature, alpha) on the validation split for one student-data regime."""
    candidates = [(None, None)] + [tuple(c) for c in args.grid]
    results = []
    for temperature, alpha in candidates:
        accs = [
            run_arm(
                args.select_arm,
                None if alpha is None else teacher,
                val,
                args,
                seed,
                temperature,
                alpha,
                shift,
            )["accuracy"]
            for seed in args.select_seeds
        ]
        label = "alone" if alpha is None else f"T={temperature:g}, alpha={alpha:g}"
        print(f"  {label:22s} val {np.mean(accs):.4f}  {np.round(accs, 4).tolist()}", flush=True)
        results.append({"temperature": temperature, "alpha": alpha, **_stats(accs)})
    best = max((r for r in results if r["alpha"] is not None), key=lambda r: r["mean"])
    return (best["temperature"], best["alpha"]), results


REGIMES = {"original": False, "shifted": True}
COLUMNS = [
    "student",
    "params",
    "sparsity",
    "mean acc",
    "std (pts)",
    "min",
    "max",
    "gain (pts)",
    "seeds up",
    "train acc",
    "fit s",
]


def arm_runs(data: Split, teacher, args, shift: bool, temperature, alpha) -> list[dict]:
    """Every student alone and + teacher, trained on ``data.x_train``, scored on ``data.x_test``."""
    runs = []
    for seed in args.seeds:  # arms interleaved within each seed
        for student in args.students:
            for taught in (False, True):
                r = run_arm(
                    student,
                    teacher if taught else None,
                    data,
                    args,
                    seed,
                    temperature,
                    alpha,
                    shift,
                )
                name = f"{student}{' + teacher' if taught else ' alone'}"
                print(f"  seed {seed}  {name:40s} {r['accuracy']:.4f}  ({r['seconds']:.0f}s)")
                runs.append(r)
    return runs


def pool_folds(fold_runs: list[list[dict]], fold_sizes: list[int]) -> list[dict]:
    """One run per (student, arm, seed): accuracy over the union of the folds' test images.

    Each image is scored once, by the model that did not train on it, so the
    pooled accuracy is the share of all images classified right (a fold's
    accuracy weighted by its size). Train accuracy and seconds are fold means.
    """
    total = sum(fold_sizes)
    pooled = []
    for group in zip(*fold_runs):  # the same (seed, student, arm) in every fold
        first = group[0]
        assert all(
            (r["student"], r["teacher"], r["seed"])
            == (first["student"], first["teacher"], first["seed"])
            for r in group
        )
        pooled.append(
            {
                **first,
                "accuracy": sum(r["accuracy"] * n for r, n in zip(group, fold_sizes)) / total,
                "train_accuracy": float(np.mean([r["train_accuracy"] for r in group])),
                "sparsity": float(np.mean([r["sparsity"] for r in group])),
                "seconds": float(np.mean([r["seconds"] for r in group])),
                "per_fold": [r["accuracy"] for r in group],
            }
        )
    return pooled


def summarize(runs: list[dict], students: list[str]) -> list[dict]:
    """Mean, spread and the teacher's per-seed gain for each student, alone and + teacher."""
    arms = []
    for student in students:
        alone = [r for r in runs if r["student"] == student and not r["teacher"]]
        taught = [r for r in runs if r["student"] == student and r["teacher"]]
        gains = [t["accuracy"] - a["accuracy"] for a, t in zip(alone, taught)]
        for label, group in (("alone", alone), ("+ teacher", taught)):
            arms.append(
                {
                    "student": student,
                    "teacher": label != "alone",
                    "params": group[0]["params"],
                    "sparsity": group[0]["sparsity"],
                    "train_accuracy": float(np.mean([r["train_accuracy"] for r in group])),
                    "seconds": float(np.mean([r["seconds"] for r in group])),
                    **_stats([r["accuracy"] for r in group]),
                    "gain": _stats(gains) if label != "alone" else None,
                    "seeds_up": int(np.sum(np.array(gains) > 0)) if label != "alone" else None,
                }
            )
    return arms


def run_split(data: Split, args) -> tuple[dict, dict[str, list[dict]]]:
    """Teachers, selection and test runs on one train/test split; returns (summary, runs)."""
    # Selection never sees this split's test images: it runs inside its training images.
    val = split_off_validation(data)
    val_teacher = train_teacher(val, args)
    teacher_val = accuracy(val_teacher, val.x_test, val.y_test)
    print(
        f"Selection teacher: trained on {len(val.x_train)} images, val accuracy {teacher_val:.2%}"
    )
    teacher = train_teacher(data, args)
    fold = {
        "test_images": len(data.x_test),
        "teacher_params": teacher.count_params(),
        "teacher_test_accuracy": accuracy(teacher, data.x_test, data.y_test),
        "teacher_train_accuracy": accuracy(teacher, data.x_train, data.y_train),
        "selection_teacher_val_accuracy": teacher_val,
        "mean_top_probability_by_temperature": _teacher_confidence(
            teacher, data.x_train, sorted({t for t, _ in args.grid})
        ),
        "regimes": {},
    }
    print(
        f"Teacher: {args.teacher} x{args.teacher_members}, {fold['teacher_params']:,} params, "
        f"trained {'with' if args.teacher_shift else 'without'} +-1 px shifts, "
        f"test {fold['teacher_test_accuracy']:.2%}, train {fold['teacher_train_accuracy']:.2%}"
    )
    print(
        "Teacher's mean top probability on the training images, by temperature: "
        + ", ".join(
            f"T={t:g}: {p:.3f}" for t, p in fold["mean_top_probability_by_temperature"].items()
        )
    )
    runs = {}
    for regime in args.student_data:
        shift = REGIMES[regime]
        print(f"\nStudents trained on the {regime} images. Selection ({args.select_arm}):")
        (temperature, alpha), selection = select(val, val_teacher, args, shift)
        print(f"Chosen on validation: T={temperature:g}, alpha={alpha:g}")
        runs[regime] = arm_runs(data, teacher, args, shift, temperature, alpha)
        fold["regimes"][regime] = {
            "selection": selection,
            "chosen": {"temperature": temperature, "alpha": alpha},
        }
    return fold, runs


def _table_rows(arms: list[dict]) -> list[list]:
    return [
        [
            f"{a['student']} {'+ teacher' if a['teacher'] else 'alone'}",
            a["params"],
            a["sparsity"],
            a["mean"],
            a["std"] * 100,
            a["min"],
            a["max"],
            None if a["gain"] is None else a["gain"]["mean"] * 100,
            a["seeds_up"],
            a["train_accuracy"],
            a["seconds"],
        ]
        for a in arms
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--folds",
        type=int,
        default=5,
        help="stratified k-fold over all 1,797 images (a teacher and a selection per fold); "
        "0 = the fixed test split of load_digits()",
    )
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak of the warm-up + cosine")
    parser.add_argument(
        "--student-data",
        nargs="+",
        default=["original"],
        choices=list(REGIMES),
        help="the students' training images: as they are, and/or with random +-1 pixel "
        "shifts (the same for both arms); one table each",
    )
    parser.add_argument(
        "--teacher-shift",
        type=int,
        default=1,
        help="train the teacher with random +-1 pixel shifts (1/0)",
    )
    parser.add_argument(
        "--student",
        default="MLP 400-400",
        choices=list(ARCHITECTURES),
        help="student architecture; its arms are plain, pruned 80% and 4-bit",
    )
    parser.add_argument("--teacher", default="digits CNN", choices=["digits CNN", *ARCHITECTURES])
    parser.add_argument(
        "--teacher-members",
        type=int,
        default=3,
        help="independently trained teachers whose logits are averaged",
    )
    parser.add_argument(
        "--mixup",
        type=float,
        default=0.0,
        help="Beta concentration of in-batch mixup for every arm (0 = off; labels mixed too)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--select-seeds", type=int, nargs="+", default=[10, 11])
    parser.add_argument("--select-arm", default=None, choices=list(STUDENTS))
    parser.add_argument(
        "--grid",
        type=float,
        nargs=2,
        action="append",
        metavar=("T", "ALPHA"),
        help=f"candidate (temperature, alpha); repeat (default {GRID})",
    )
    parser.add_argument("--students", nargs="+", default=None, choices=list(STUDENTS))
    parser.add_argument("--out", default="benchmarks/results/distillation.json")
    args = parser.parse_args()
    if args.folds == 1 or args.folds < 0:
        parser.error(f"--folds must be 0 (fixed test split) or >= 2, got {args.folds}")
    args.grid = args.grid or GRID
    arch = args.student
    args.students = args.students or [arch, f"{arch} pruned 80%", f"{arch} 4-bit weights"]
    args.select_arm = args.select_arm or f"{arch} pruned 80%"
    start = time.perf_counter()

    digits = load_digits()
    splits = fold_splits(digits, args.folds) if args.folds else [digits]
    where = (
        f"{args.folds}-fold, all {sum(len(s.x_test) for s in splits)} images"
        if args.folds
        else "test split"
    )
    fold_runs = {regime: [] for regime in args.student_data}
    folds = []
    for k, data in enumerate(splits):
        if args.folds:
            print(
                f"\n=== Fold {k + 1}/{args.folds}: train {len(data.x_train)}, "
                f"test {len(data.x_test)} images"
            )
        fold, runs = run_split(data, args)
        for regime in args.student_data:
            fold_runs[regime].append(runs[regime])
        folds.append(fold)

    sizes = [f["test_images"] for f in folds]
    teacher_acc = sum(f["teacher_test_accuracy"] * n for f, n in zip(folds, sizes)) / sum(sizes)
    regimes = {}
    for regime in args.student_data:
        runs = pool_folds(fold_runs[regime], sizes)
        arms = summarize(runs, args.students)
        chosen = [f["regimes"][regime]["chosen"] for f in folds]
        regimes[regime] = {
            "shift": REGIMES[regime],
            "chosen": chosen,
            "arms": arms,
            "runs": runs,
            "fold_runs": fold_runs[regime] if args.folds else None,
        }
        settings = sorted({(c["temperature"], c["alpha"]) for c in chosen})
        print()
        print(
            format_table(
                _table_rows(arms),
                COLUMNS,
                title=f"Distillation on digits ({where}), students on the {regime} images, "
                f"seeds {args.seeds}, {args.epochs} epochs, (T, alpha) chosen on validation: "
                + ", ".join(f"({t:g}, {a:g})" for t, a in settings)
                + f" (teacher {teacher_acc:.2%})",
            )
        )
    total = time.perf_counter() - start
    print(f"Total time {total:.0f}s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(
        out,
        json.dumps(
            {
                "protocol": {
                    "evaluation": where,
                    "folds": args.folds,
                    "epochs": args.epochs,
                    "batch": args.batch,
                    "peak_lr": args.lr,
                    "student_data": args.student_data,
                    "teacher_shift": bool(args.teacher_shift),
                    "mixup": args.mixup,
                    "teacher": args.teacher,
                    "teacher_members": args.teacher_members,
                    "student": args.student,
                    "seeds": args.seeds,
                    "select_seeds": args.select_seeds,
                    "select_arm": args.select_arm,
                    "grid": [list(c) for c in args.grid],
                },
                "teacher": {
                    "params": folds[0]["teacher_params"],
                    "test_accuracy": teacher_acc,
                },
                "folds": folds,
                "regimes": regimes,
                "total_seconds": total,
            },
            indent=2,
        ),
    )
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()

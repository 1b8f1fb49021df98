"""M-FAC / WoodFisher one-shot pruning against global magnitude pruning, no fine-tuning.

Two tiny trained models, each pruned to 50/70/90% over all its kernels:

* ``correlated``: an MLP 16-24(tanh)-4 regressing a smooth target of 16 strongly
  correlated inputs (4 latent factors), mean squared error;
* ``digits``: the LeNet-300-100 MLP (``tfcompress.models.digits_mlp``) on the bundled
  digits, cross-entropy (reported as loss and test accuracy).

Arms: global magnitude (one ranking over all kernels), ``mfac_prune`` in one step and
in ``--steps`` steps (gradients recomputed in between), each for ``--seeds`` seeds
(model initialisation and training order). The number is the test-loss increase
over the unpruned model, and the ratio to magnitude's in the same seed.

Also the time of one inverse-Hessian-vector product for ``d = 100,000`` and
``m = 64`` (float32 gradients), dense and blocked, the minimum of 20 calls.

Run: ``python3 run.py bench mfac`` (``--quick``: one seed, no digits). Writes
``benchmarks/results/mfac.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from tfcompress.core.fisher import InverseFisher
from tfcompress.core.io import write_text
from tfcompress.datasets import load_digits
from tfcompress.models import digits_mlp
from tfcompress.oneshot.mfac import mfac_prune
from tfcompress.pruning.masks import compute_masks
from tfcompress.pruning.prunable import find_prunable

SPARSITIES = (0.5, 0.7, 0.9)


def correlated_task(seed: int):
    rng = np.random.default_rng(0)
    n = 1024
    latent = rng.standard_normal((n, 4))
    x = (latent @ rng.standard_normal((4, 16)) + 0.1 * rng.standard_normal((n, 16))).astype(
        "float32"
    )
    y = np.tanh(latent @ rng.standard_normal((4, 8))) @ rng.standard_normal((8, 4))
    y = (y + 0.1 * rng.standard_normal(y.shape)).astype("float32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(24, activation="tanh", name="h"),
            keras.layers.Dense(4, name="out"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(x[:512], y[:512], epochs=25, batch_size=32, verbose=0)
    return model, keras.losses.MeanSquaredError(), (x[:512], y[:512]), (x[512:], y[512:])


def digits_task(seed: int):
    data = load_digits(flatten=True)
    keras.utils.set_random_seed(seed)
    model = digits_mlp()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(1e-3), loss)
    model.fit(data.x_train, data.y_train, epochs=15, batch_size=32, verbose=0)
    return model, loss, (data.x_train, data.y_train), (data.x_test, data.y_test)


def magnitude(model: keras.Model, sparsity: float) -> keras.Model:
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    variables = [t.variable for t in find_prunable(copy)]
    masks = compute_masks([np.asarray(v) for v in variables], sparsity, scope="global")
    for variable, mask in zip(variables, masks):
        variable.assign(np.asarray(variable) * mask)
    return copy


def evaluate(model, loss, test) -> dict:
    logits = model(test[0])
    out = {"loss": float(loss(test[1], logits))}
    if np.asarray(test[1]).ndim == 1:
        out["accuracy"] = float(np.mean(np.argmax(np.asarray(logits), -1) == test[1]))
    return out


def run_task(name, build, seeds, steps, num_gradients) -> list[dict]:
    rows = []
    for seed in seeds:
        model, loss, calibration, test = build(seed)
        base = evaluate(model, loss, test)
        for sparsity in SPARSITIES:
            arms = {"magnitude": magnitude(model, sparsity)}
            for count in sorted({1, steps}):
                began = time.perf_counter()
                arms[f"mfac_{count}step"] = mfac_prune(
                    model,
                    calibration,
                    sparsity,
                    num_gradients=num_gradients,
                    loss=loss,
                    steps=count,
                )
                arms[f"mfac_{count}step_seconds"] = time.perf_counter() - began
            row = {"task": name, "seed": seed, "sparsity": sparsity, "base": base}
            for arm, pruned in arms.items():
                if arm.endswith("_seconds"):
                    row[arm] = pruned
                    continue
                result = evaluate(pruned, loss, test)
                row[arm] = {**result, "increase": result["loss"] - base["loss"]}
            rows.append(row)
            mag = row["magnitude"]["increase"]
            cells = [f"magnitude +{mag:.4f}"] + [
                f"{arm} +{row[arm]['increase']:.4f} (x{row[arm]['increase'] / mag:.2f})"
                for arm in arms
                if arm.startswith("mfac") and not arm.endswith("_seconds")
            ]
            print(f"{name} seed {seed} {sparsity:.0%}: " + " | ".join(cells), flush=True)
    return rows


def ihvp_timing() -> list[dict]:
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((64, 100_000)).astype(np.float32)
    vector = rng.standard_normal(100_000)
    rows = []
    for block_size in (None, 4096, 512):
        began = time.perf_counter()
        fisher = InverseFisher(grads, 1e-3, block_size=block_size)
        setup = time.perf_counter() - began
        calls = []
        for _ in range(20):
            began = time.perf_counter()
            fisher.ihvp(vector)
            calls.append(time.perf_counter() - began)
        began = time.perf_counter()
        fisher.diagonal()
        diagonal = time.perf_counter() - began
        row = {
            "d": 100_000,
            "m": 64,
            "block_size": block_size,
            "setup_s": setup,
            "ihvp_min_s": min(calls),
            "ihvp_median_s": float(np.median(calls)),
            "diagonal_s": diagonal,
        }
        rows.append(row)
        print(
            f"ihvp d=100000 m=64 block={block_size}: setup {setup * 1e3:.1f} ms, ihvp min "
            f"{min(calls) * 1e3:.2f} ms (median {np.median(calls) * 1e3:.2f}), diagonal "
            f"{diagonal * 1e3:.1f} ms",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--num-gradients", type=int, default=64)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    results = {"ihvp": ihvp_timing()}
    results["correlated"] = run_task(
        "correlated", correlated_task, seeds, args.steps, args.num_gradients
    )
    if not args.quick:
        results["digits"] = run_task(
            "digits", digits_task, range(min(3, args.seeds)), args.steps, args.num_gradients
        )
    out = Path(__file__).parent / "results" / "mfac.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

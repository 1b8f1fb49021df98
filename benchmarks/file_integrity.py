"""Benchmark: randomly mutated archives are refused or load identical, never corrupted.

For each archive kind (``.tfcp`` from ``tfc.pack``; the packed binary store from
``tfc.packing.save_packed``) a tiny model is written once, then ``--mutations`` copies are
mutated, a quarter each way: 1-4 flipped bits, a truncation, 1-16 inserted random bytes, 1-16
overwritten bytes, all at uniformly random positions. Each copy is loaded and counted as:

* refused: ``tfc.UnreadableFileError`` (the documented error; most common reasons listed);
* identical: loaded, and every weight and the outputs on fixed inputs equal those of the model
  loaded from the unmutated file (the store keeps quantized kernels, not the latent weights);
* different: loaded with other weights or outputs (silent corruption; must be 0);
* other: any other exception (must be 0).

Run: ``PYTHONPATH=. python benchmarks/file_integrity.py --mutations 10000``; writes
``benchmarks/results/file_integrity.json``. Exits 1 if any copy loaded different or raised
another exception.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import tfcompress as tfc
from tfcompress.core.io import write_text
from tfcompress.packing import load_packed, save_packed

RESULTS = Path(__file__).resolve().parent / "results" / "file_integrity.json"
KINDS = ("bit flip", "truncation", "insertion", "overwrite")


def tfcp_model() -> keras.Model:
    """A pruned and clustered MLP: sparse, Huffman and raw records in one archive."""
    keras.utils.set_random_seed(0)
    model = tfc.models.digits_mlp(hidden=(16,), input_dim=8, num_classes=4)
    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel).copy()
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.6)] = 0
    model.layers[0].kernel.assign(kernel)
    return tfc.cluster_model(model, clusters=4, layers=["dense1"])


def store_model() -> keras.Model:
    """Binary, asymmetric ternary (TTQ) and float layers: every kind of stored array."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            tfc.layers.BinaryDense(8, name="binary"),
            tfc.layers.BinaryDense(6, kernel_quantizer="ttq", name="ternary"),
            keras.layers.Dense(4, name="float"),
        ]
    )
    model.get_layer("ternary").weights[2].assign(np.full(6, 0.7, "float32"))
    model.get_layer("ternary").weights[3].assign(np.full(6, 1.3, "float32"))
    return model


def mutate(data: bytes, kind: int, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    if kind == 0:
        for bit in rng.choice(8 * len(out), size=int(rng.integers(1, 5)), replace=False):
            out[bit // 8] ^= 1 << (bit % 8)
    elif kind == 1:
        del out[int(rng.integers(0, len(out))) :]
    elif kind == 2:
        at = int(rng.integers(0, len(out) + 1))
        out[at:at] = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    else:
        size = int(rng.integers(1, 17))
        at = int(rng.integers(0, len(out) - size + 1))
        out[at : at + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    return bytes(out)


def _reason(error: tfc.UnreadableFileError) -> str:
    """The reason without numbers and details, to count refusals by kind."""
    text = re.sub(r"'[^']*'", "'...'", error.reason)
    text = re.sub(r"0x[0-9a-f]+|\d+", "N", text)
    return re.split(r"[(;]", text, maxsplit=1)[0].strip()[:70]


def same(model: keras.Model, reference: keras.Model, x: np.ndarray, expected: np.ndarray) -> bool:
    if len(model.weights) != len(reference.weights):
        return False
    for a, b in zip(model.weights, reference.weights):
        a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        if a.shape != b.shape or not np.array_equal(a, b):
            return False
    return bool(np.array_equal(np.asarray(model(x)), expected))


def run(name: str, original: bytes, load, x, count: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    reference = load(original)
    expected = np.asarray(reference(x))
    counts = {kind: collections.Counter() for kind in KINDS}
    reasons: collections.Counter = collections.Counter()
    examples: dict[str, str] = {}
    start = time.perf_counter()
    for i in range(count):
        kind = i % 4
        data = mutate(original, kind, rng)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a version-1 warning still counts as a load
                model = load(data)
        except tfc.UnreadableFileError as error:
            counts[KINDS[kind]]["refused"] += 1
            reasons[_reason(error)] += 1
            continue
        except Exception as error:
            counts[KINDS[kind]]["other"] += 1
            examples.setdefault(type(error).__name__, f"{KINDS[kind]}: {error}"[:300])
            continue
        verdict = "identical" if same(model, reference, x, expected) else "different"
        counts[KINDS[kind]][verdict] += 1
        if verdict == "different":
            examples.setdefault("different", f"{KINDS[kind]} at mutation {i}")
    seconds = time.perf_counter() - start
    total = sum(counts.values(), collections.Counter())
    print(f"\n{name}: {len(original)} bytes, {count} mutations in {seconds:.1f} s")
    print(f"  {'mutation':<11} {'refused':>8} {'identical':>10} {'different':>10} {'other':>6}")
    for kind in (*KINDS, "total"):
        c = total if kind == "total" else counts[kind]
        print(
            f"  {kind:<11} {c['refused']:>8} {c['identical']:>10} {c['different']:>10} "
            f"{c['other']:>6}"
        )
    print("  most common refusal reasons:")
    for reason, n in reasons.most_common(8):
        print(f"    {n:>6}  {reason}")
    for key, text in examples.items():
        print(f"  !! {key}: {text}")
    return {
        "bytes": len(original),
        "mutations": count,
        "seconds": seconds,
        "total": dict(total),
        "by_mutation": {k: dict(v) for k, v in counts.items()},
        "refusal_reasons": dict(reasons.most_common()),
        "examples": examples,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=10_000, help="per format (%(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (%(default)s)")
    parser.add_argument("--out", default=str(RESULTS), help="JSON results (%(default)s)")
    args = parser.parse_args(argv)
    if args.mutations < 1:
        parser.error(f"--mutations must be a positive integer, got {args.mutations}")
    start = time.perf_counter()
    results = {}

    packed = tfcp_model()
    x = np.random.default_rng(1).standard_normal((8, 8)).astype("float32")
    archive = tfc.packing.dumps(packed)[0]
    results["tfcp"] = run(
        ".tfcp (tfc.pack)",
        archive,
        lambda data: tfc.packing.loads(data, path="mutated.tfcp"),
        x,
        args.mutations,
        args.seed,
    )

    binary = store_model()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.npz"
        save_packed(binary, path)
        store = path.read_bytes()

        def load_store(data: bytes) -> keras.Model:
            path.write_bytes(data)
            return load_packed(path)

        results["packed_store"] = run(
            "packed store (save_packed .npz)",
            store,
            load_store,
            x,
            args.mutations,
            args.seed + 1,
        )
    total = time.perf_counter() - start
    print(f"\nTotal time {total:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps({"seed": args.seed, "seconds": total, **results}, indent=2))
    print(f"wrote {out}")
    bad = sum(r["total"].get("different", 0) + r["total"].get("other", 0) for r in results.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

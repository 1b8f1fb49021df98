"""Trains the benchmark suite's byte-level language model once and ships its weights.

    python3 run.py bench train_language_model [--steps 8000] [--batch 32]

Trains :func:`tfcompress.language_model.byte_lm` (d=128, 3 blocks, 4 heads,
context 128, 677k parameters) on the training split of the bundled CPython
corpus: AdamW (weight decay 0.01, global-norm clipping 1.0), learning rate
warmed up linearly over 300 steps to 2e-3 then cosine-decayed to 1e-4, random
windows of 129 bytes, ``jit_compile=True``. Held-out bits per byte is logged
every 1,000 steps on 512 windows and at the end on the whole held-out split,
with the float16-rounded weights that ship. About 25 minutes on 2 cores.

Writes ``tfcompress/data/byte_lm.weights.npz`` (float16) and
``tfcompress/data/byte_lm.json`` (config, recipe, time, metrics, versions).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfcompress.bench.timing import cpu_isa
from tfcompress.core.io import write_bytes, write_text
from tfcompress.datasets import load_text_corpus
from tfcompress.language_model import (
    bits_per_byte,
    byte_lm,
    eval_windows,
    gzip_bits_per_byte,
    sample_windows,
)

DATA = Path(__file__).resolve().parent.parent / "tfcompress" / "data"
CONFIG = {"context": 128, "d_model": 128, "num_layers": 3, "num_heads": 4, "ffn_units": 512}
CHUNK = 500  # steps per fit() call: fresh random windows each chunk


def _schedule(steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        warmup_target=2e-3,
        warmup_steps=300,
        decay_steps=max(steps - 300, 1),
        alpha=0.05,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DATA), help="folder for the weights and record")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    corpus = load_text_corpus()
    model = byte_lm(**CONFIG)
    model.compile(
        keras.optimizers.AdamW(_schedule(args.steps), weight_decay=0.01, global_clipnorm=1.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    probe_x, probe_y = eval_windows(corpus.test, CONFIG["context"], limit=512)
    log = []
    started = time.perf_counter()
    done = 0
    while done < args.steps:
        steps = min(CHUNK, args.steps - done)
        x, y = sample_windows(corpus.train, steps * args.batch, CONFIG["context"], seed=1 + done)
        history = model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
        done += steps
        if done % 1000 == 0 or done == args.steps:
            bpb, acc = bits_per_byte(model, probe_x, probe_y)
            elapsed = time.perf_counter() - started
            log.append(
                {
                    "step": done,
                    "train_loss": history.history["loss"][-1],
                    "heldout_bpb_512": bpb,
                    "seconds": elapsed,
                }
            )
            print(
                f"step {done}: train loss {history.history['loss'][-1]:.3f} nats, "
                f"held-out {bpb:.3f} bits/byte, acc {acc:.3f}, {elapsed:.0f} s",
                flush=True,
            )
    train_seconds = time.perf_counter() - started

    # Ship float16; score the float16-rounded weights, which is what users load.
    weights = [w.astype(np.float16) for w in model.get_weights()]
    model.set_weights([w.astype(np.float32) for w in weights])
    x_test, y_test = eval_windows(corpus.test, CONFIG["context"])
    bpb, acc = bits_per_byte(model, x_test, y_test)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{f"w{i:03d}": w for i, w in enumerate(weights)})
    out = Path(args.out)
    write_bytes(out / "byte_lm.weights.npz", buffer.getvalue())
    record = {
        "config": CONFIG,
        "recipe": {
            "steps": args.steps,
            "batch": args.batch,
            "seed": args.seed,
            "optimizer": "AdamW(wd=0.01, clipnorm=1.0), warmup 300 to 2e-3, cosine to 1e-4",
            "jit_compile": True,
        },
        "train_seconds": round(train_seconds, 1),
        "machine": {
            "cpu_isa": cpu_isa(),
            "platform": platform.platform(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "heldout": {
            "windows": len(x_test),
            "bits_per_byte": bpb,
            "next_byte_accuracy": acc,
            "gzip9_bits_per_byte": gzip_bits_per_byte(corpus.test),
        },
        "parameters": model.count_params(),
        "weights_bytes": len(buffer.getvalue()),
        "log": log,
    }
    write_text(out / "byte_lm.json", json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["heldout"], indent=1))


if __name__ == "__main__":
    main()

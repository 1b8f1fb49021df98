"""Benchmark: packed binary ops (XNOR + popcount) against float32 TensorFlow.

Part 1: ``binary_matmul`` on packed operands vs float32 ``tf.linalg.matmul`` of the same shape,
from (256, 1024) x (1024, 1024) up to (1024, 4096) x (4096, 4096). The packed arm is timed on
pre-packed operands (the weight is packed once offline; packing the activations is timed as its
own arm too). Arms are interleaved in one process; each figure is the minimum over repeats.

Part 2: the binary digits CNN (``tfcompress.models.digits_binary_cnn``: conv1 and logits float,
conv2/conv3/dense1 BinaryConv2D/BinaryDense with binary weights and inputs), trained 2 epochs,
run on its normal Keras path and frozen (``tfc.layers.freeze_binary``) on the compiled ops and
on the pure-TF fallback, next to its float twin; every arm is checked to give the same
predictions as the Keras path.

Run: ``PYTHONPATH=. python benchmarks/custom_ops.py [--quick]``; writes
``benchmarks/results/custom_ops.json``.
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
import tensorflow as tf

from tfcompress.core.io import write_text
from tfcompress.datasets import load_digits
from tfcompress.demo.techniques.binary import digits_float_twin
from tfcompress.layers import freeze_binary
from tfcompress.models import digits_binary_cnn, train_classifier
from tfcompress.ops import tf as tops
from tfcompress.reporting import format_table

SHAPES = [(256, 1024, 1024), (512, 2048, 2048), (1024, 4096, 4096)]
RESULTS = Path(__file__).parent / "results" / "custom_ops.json"


def interleaved_min(arms: dict, repeats: int) -> dict:
    """Runs every arm once per round, round after round; returns each arm's minimum seconds."""
    for fn in arms.values():  # warm-up (tracing, allocation)
        fn()
    best = {name: float("inf") for name in arms}
    for _ in range(repeats):
        for name, fn in arms.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def signs(rng, *shape):
    return tf.constant(np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32))


def bench_matmul(repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in SHAPES:
        x, w = signs(rng, m, k), signs(rng, k, n)
        w_packed32 = tops.pack_dense_kernel(w, 32)
        w_packed64 = tops.pack_dense_kernel(w, 64)
        x_packed32, x_packed64 = tops.pack_bits(x, 32), tops.pack_bits(x, 64)
        ref = tf.linalg.matmul(x, w).numpy()
        assert np.array_equal(tops.binary_matmul(x_packed64, w_packed64, k).numpy(), ref)
        assert np.array_equal(tops.binary_matmul(x_packed32, w_packed32, k).numpy(), ref)
        # .numpy() forces completion; each arm returns a float32 [m, n] result.
        arms = {
            "float32 matmul": lambda x=x, w=w: tf.linalg.matmul(x, w).numpy(),
            "binary 64-bit": lambda a=x_packed64, b=w_packed64, k=k: tops.binary_matmul(
                a, b, k
            ).numpy(),
            "binary 32-bit": lambda a=x_packed32, b=w_packed32, k=k: tops.binary_matmul(
                a, b, k
            ).numpy(),
            "pack x + binary 64-bit": lambda x=x, b=w_packed64, k=k: tops.binary_matmul(
                tops.pack_bits(x, 64), b, k
            ).numpy(),
        }
        t = interleaved_min(arms, repeats)
        base = t["float32 matmul"]
        for name, sec in t.items():
            rows.append(
                {
                    "shape": f"({m},{k})x({k},{n})",
                    "arm": name,
                    "ms": 1e3 * sec,
                    "speedup_vs_float32": base / sec,
                }
            )
    return rows


def _inference_fn(model):
    spec = [tf.TensorSpec([None, 8, 8, 1], tf.float32)]
    return tf.function(lambda x: model(x, training=False), input_signature=spec)


def _copy(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def bench_cnn(repeats: int) -> list[dict]:
    """The real binary digits CNN (BinaryConv2D/BinaryDense) with and without the packed ops."""
    data = load_digits()
    keras.utils.set_random_seed(0)
    binary = digits_binary_cnn()
    train_classifier(binary, data, epochs=2, learning_rate=1e-2)  # realistic BN statistics
    float_twin = digits_float_twin()
    float_twin(data.x_test[:1])
    compiled, fallback = _copy(binary), _copy(binary)
    assert set(freeze_binary(compiled, use_kernels=True).values()) == {"packed"}
    assert set(freeze_binary(fallback, use_kernels=False).values()) == {"packed"}
    fns = {
        "float twin CNN (Keras)": _inference_fn(float_twin),
        "binary CNN, Keras float path": _inference_fn(binary),
        "binary CNN, frozen, compiled ops": _inference_fn(compiled),
        "binary CNN, frozen, pure-TF fallback": _inference_fn(fallback),
    }
    rows = []
    for batch in (359, 1):
        x = tf.constant(data.x_test[:batch])
        ref = fns["binary CNN, Keras float path"](x).numpy()
        for name in ("binary CNN, frozen, compiled ops", "binary CNN, frozen, pure-TF fallback"):
            out = fns[name](x).numpy()
            assert np.allclose(out, ref, rtol=1e-4, atol=1e-4), (name, np.abs(out - ref).max())
            assert np.array_equal(out.argmax(-1), ref.argmax(-1)), name
        arms = {name: (lambda fn=fn, x=x: fn(x).numpy()) for name, fn in fns.items()}
        t = interleaved_min(arms, repeats * 5)
        for name, sec in t.items():
            rows.append(
                {
                    "shape": f"batch {batch}",
                    "arm": name,
                    "ms": 1e3 * sec,
                    "speedup_vs_keras_binary": t["binary CNN, Keras float path"] / sec,
                    "speedup_vs_fallback": t["binary CNN, frozen, pure-TF fallback"] / sec,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small shapes only, 3 repeats")
    parser.add_argument("--cnn-only", action="store_true", help="only the binary CNN part")
    parser.add_argument("--largest", action="store_true", help="only the largest matmul shape")
    args = parser.parse_args()
    if args.largest:
        SHAPES[:] = SHAPES[-1:]
    if args.quick:
        SHAPES[:] = SHAPES[:1]
        args.repeats = 3
    if not tops.has_compiled_kernels():
        raise SystemExit("compiled kernels unavailable; nothing to compare against")
    conditions = {
        "tensorflow": tf.__version__,
        "kernel_isa": tops.kernel_isa(),
        "cpu_count": os.cpu_count(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default",
        "loadavg_before": os.getloadavg()[0],
    }
    mm = [] if args.cnn_only else bench_matmul(args.repeats)
    cnn = bench_cnn(args.repeats)
    conditions["loadavg_after"] = os.getloadavg()[0]
    headers = ["shape", "arm", "ms", "speedup_vs_float32"]
    if mm:
        print(
            format_table(
                [[r[h] for h in headers] for r in mm],
                headers,
                "Packed binary matmul vs float32 tf.linalg.matmul",
            )
        )
    headers_cnn = ["shape", "arm", "ms", "speedup_vs_keras_binary", "speedup_vs_fallback"]
    print(
        format_table(
            [[r[h] for h in headers_cnn] for r in cnn],
            headers_cnn,
            "Binary digits CNN inference: packed ops (freeze_binary) vs the Keras path",
        )
    )
    print("conditions:", conditions)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS, json.dumps({"conditions": conditions, "matmul": mm, "cnn": cnn}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""Benchmark: packed binary ops (XNOR + popcount) against float32 TensorFlow.

Part 1: ``binary_matmul`` on packed operands vs float32 ``tf.linalg.matmul`` of the same shape,
from (256, 1024) x (1024, 1024) up to (1024, 4096) x (4096, 4096). The packed arm is timed on
pre-packed operands (the weight is packed once offline; packing the activations is timed as its
own arm too). Arms are interleaved in one process; each figure is the minimum over repeats.

Part 2: a binary digits CNN (first conv and logits float, conv2/conv3/dense1 binary with
per-channel scales, the usual BNN recipe) run through ``binary_*_inference`` with the compiled
kernels and with the pure-TF fallback, next to the float digits CNN. It uses the packed ops
directly because the Binary* layers (issue 7) are not on main yet; its weights are the float
model's signs, so it measures speed, not accuracy (both binary arms are checked to agree).

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

import numpy as np
import tensorflow as tf

from tfcompress.datasets import load_digits
from tfcompress.models import digits_cnn
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


def binary_cnn_fns(model, use_kernels: bool):
    """Inference function of the binary digits CNN built from the float model's weights."""
    layers = {layer.name: layer for layer in model.layers}
    conv1, logits = layers["conv1"], layers["logits"]
    packed, scales, biases = {}, {}, {}
    for name in ("conv2", "conv3", "dense1"):
        kernel, bias = layers[name].kernel, layers[name].bias
        axes = list(range(len(kernel.shape) - 1))
        scales[name] = tf.reduce_mean(tf.abs(kernel), axis=axes)
        biases[name] = tf.identity(bias)
        pack = tops.pack_conv2d_kernel if name != "dense1" else tops.pack_dense_kernel
        packed[name] = pack(kernel, 32, use_kernels=use_kernels)

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
    def run(x):
        h = conv1(x)  # float first layer; binary layers see sign(h - mean) style inputs
        h = h - tf.reduce_mean(h, axis=-1, keepdims=True)
        h = tops.binary_conv2d_inference(
            h,
            packed["conv2"],
            scales["conv2"],
            biases["conv2"],
            padding="same",
            use_kernels=use_kernels,
        )
        h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        h = tops.binary_conv2d_inference(
            h,
            packed["conv3"],
            scales["conv3"],
            biases["conv3"],
            padding="same",
            use_kernels=use_kernels,
        )
        h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        h = tf.reshape(h, [-1, int(np.prod(h.shape[1:]))])
        h = tops.binary_dense_inference(
            h, packed["dense1"], scales["dense1"], biases["dense1"], use_kernels=use_kernels
        )
        return logits(tf.nn.relu(h))

    return run


def bench_cnn(repeats: int) -> list[dict]:
    data = load_digits()
    model = digits_cnn()
    model(data.x_test[:1])
    float_fn = tf.function(model, input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
    compiled = binary_cnn_fns(model, use_kernels=True)
    fallback = binary_cnn_fns(model, use_kernels=False)
    rows = []
    for batch in (359, 1):
        x = tf.constant(data.x_test[:batch])
        a, b = compiled(x).numpy(), fallback(x).numpy()
        assert np.allclose(a, b, atol=1e-4), np.abs(a - b).max()
        arms = {
            "float digits CNN": lambda x=x: float_fn(x).numpy(),
            "binary CNN, compiled ops": lambda x=x: compiled(x).numpy(),
            "binary CNN, pure-TF fallback": lambda x=x: fallback(x).numpy(),
        }
        t = interleaved_min(arms, repeats * 5)
        for name, sec in t.items():
            rows.append(
                {
                    "shape": f"batch {batch}",
                    "arm": name,
                    "ms": 1e3 * sec,
                    "speedup_vs_float32": t["float digits CNN"] / sec,
                    "speedup_vs_fallback": t["binary CNN, pure-TF fallback"] / sec,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small shapes only, 3 repeats")
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
    mm = bench_matmul(args.repeats)
    cnn = bench_cnn(args.repeats)
    conditions["loadavg_after"] = os.getloadavg()[0]
    headers = ["shape", "arm", "ms", "speedup_vs_float32"]
    print(
        format_table(
            [[r[h] for h in headers] for r in mm],
            headers,
            "Packed binary matmul vs float32 tf.linalg.matmul",
        )
    )
    headers_cnn = [*headers, "speedup_vs_fallback"]
    print(
        format_table(
            [[r[h] for h in headers_cnn] for r in cnn],
            headers_cnn,
            "Binary digits CNN inference (stand-in, see docstring)",
        )
    )
    print("conditions:", conditions)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"conditions": conditions, "matmul": mm, "cnn": cnn}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

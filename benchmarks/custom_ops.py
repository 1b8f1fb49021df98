"""Benchmark: packed binary ops (XNOR + popcount) against float32 TensorFlow.

Part 1: ``binary_matmul`` on packed operands vs float32 ``tf.linalg.matmul`` of the same shape,
from (256, 1024) x (1024, 1024) up to (1024, 4096) x (4096, 4096). The packed arm is timed on
pre-packed operands (the weight is packed once offline; packing the activations is timed as its
own arm too). Arms are interleaved in one process (``tfcompress.bench.timing``); each figure is
the minimum over repeats, the median is kept beside it, and both ratios are reported. Besides the
automatically selected code path, the packed matmul is timed with every other path this CPU can
run forced (``isa="avx2"`` etc.; ``--isas`` picks them), in the same rounds, so one run gives the
ratio of each path to float32 under the same load. The selected path (``kernel_isa()``, which
follows ``TFCOMPRESS_BINARY_ISA``), the paths available and the CPU model are printed and
recorded.

Part 2: the binary digits CNN (``tfcompress.models.digits_binary_cnn``: conv1 and logits float,
conv2/conv3/dense1 BinaryConv2D/BinaryDense with binary weights and inputs), trained 2 epochs,
run on its normal Keras path and frozen (``tfc.layers.freeze_binary``) on the compiled ops and
on the pure-TF fallback, next to its float twin; every arm is checked to give the same
predictions as the Keras path.

Run: ``PYTHONPATH=. python benchmarks/custom_ops.py [--quick] [--largest] [--isas avx2,popcnt]``;
writes
``benchmarks/results/custom_ops.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from tfcompress.bench.timing import cpu_isa, time_arms
from tfcompress.core.io import write_text
from tfcompress.datasets import load_digits
from tfcompress.kernels.tf import binary_ops
from tfcompress.layers import freeze_binary
from tfcompress.models import digits_binary_cnn, digits_float_twin, train_classifier
from tfcompress.ops import tf as tops
from tfcompress.reporting import format_table

SHAPES = [(256, 1024, 1024), (512, 2048, 2048), (1024, 4096, 4096)]
RESULTS = Path(__file__).parent / "results" / "custom_ops.json"
# kernel_isa() names -> the isa= values that force them.
_ISA_ARG = {"avx512_vpopcntdq": "avx512", "avx2": "avx2", "popcnt": "popcnt", "generic": "generic"}


def signs(rng, *shape):
    return tf.constant(np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32))


def bench_matmul(repeats: int, timings: list, forced: list[str]) -> list[dict]:
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
        for isa in forced:
            out = tops.binary_matmul(x_packed64, w_packed64, k, isa=isa).numpy()
            assert np.array_equal(out, ref), isa
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
        for isa in forced:  # the other code paths, interleaved in the same rounds
            arms[f"binary 64-bit, isa={isa}"] = lambda a=x_packed64, b=w_packed64, k=k, isa=isa: (
                tops.binary_matmul(a, b, k, isa=isa).numpy()
            )
        t = time_arms(arms, baseline="float32 matmul", rounds=repeats)
        timings.append({"shape": f"({m},{k})x({k},{n})", **t.to_dict()})
        for name, arm in t.arms.items():
            rows.append(
                {
                    "shape": f"({m},{k})x({k},{n})",
                    "arm": name,
                    "ms": 1e3 * arm.min,
                    "median_ms": 1e3 * arm.median,
                    "speedup_vs_float32": 1 / arm.ratio_min,
                    "speedup_median": 1 / arm.ratio_median,
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


def bench_cnn(repeats: int, timings: list) -> list[dict]:
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
        t = time_arms(arms, baseline="binary CNN, Keras float path", rounds=repeats * 5)
        timings.append({"shape": f"batch {batch}", **t.to_dict()})
        for name, arm in t.arms.items():
            rows.append(
                {
                    "shape": f"batch {batch}",
                    "arm": name,
                    "ms": 1e3 * arm.min,
                    "median_ms": 1e3 * arm.median,
                    "speedup_vs_keras_binary": 1 / arm.ratio_min,
                    "speedup_vs_fallback": t.ratio("binary CNN, frozen, pure-TF fallback", to=name),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small shapes only, 3 repeats")
    parser.add_argument("--cnn-only", action="store_true", help="only the binary CNN part")
    parser.add_argument("--matmul-only", action="store_true", help="only the matmul part")
    parser.add_argument("--largest", action="store_true", help="only the largest matmul shape")
    parser.add_argument(
        "--isas",
        default="others",
        help="code paths to time forced besides the selected one: 'others' (every other path "
        "this CPU has but the slow generic one), 'none', 'all', or a list like avx2,popcnt",
    )
    args = parser.parse_args()
    if args.largest:
        SHAPES[:] = SHAPES[-1:]
    if args.quick:
        SHAPES[:] = SHAPES[:1]
        args.repeats = 3
    if not tops.has_compiled_kernels():
        raise SystemExit("compiled kernels unavailable; nothing to compare against")
    selected = tops.kernel_isa()
    available = binary_ops.supported_isas()
    if args.isas in ("others", "all", "none"):
        forced = [] if args.isas == "none" else list(available)
        if args.isas == "others":
            forced = [i for i in forced if i != "generic"]
    else:
        forced = [i.strip() for i in args.isas.split(",") if i.strip()]
        unknown = sorted(set(forced) - set(available))
        if unknown:
            raise SystemExit(f"--isas: {unknown} not available on this CPU ({available})")
    forced = [i for i in forced if i != _ISA_ARG[selected]]
    print(
        f"kernel ISA selected: {selected} (TFCOMPRESS_BINARY_ISA="
        f"{os.environ.get(binary_ops.ENV_ISA, '') or 'unset'}); available: {list(available)}; "
        f"also timed forced: {forced or 'none'}; CPU: {cpu_isa()['model']}"
    )
    conditions = {
        "tensorflow": tf.__version__,
        "kernel_isa": selected,
        "supported_isas": list(available),
        "binary_isa_env": os.environ.get(binary_ops.ENV_ISA),
        "forced_isas": forced,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default",
    }
    # Each timing records the machine's conditions (load average before/after, CPU flags).
    timings: list[dict] = []
    mm = [] if args.cnn_only else bench_matmul(args.repeats, timings, forced)
    cnn = [] if args.matmul_only else bench_cnn(args.repeats, timings)
    for timing in timings:
        timing["conditions"].update(conditions)
    headers = ["shape", "arm", "ms", "median_ms", "speedup_vs_float32", "speedup_median"]
    if mm:
        print(
            format_table(
                [[r[h] for h in headers] for r in mm],
                headers,
                f"Packed binary matmul vs float32 tf.linalg.matmul (selected path: {selected})",
            )
        )
    if cnn:
        headers_cnn = [
            "shape",
            "arm",
            "ms",
            "median_ms",
            "speedup_vs_keras_binary",
            "speedup_vs_fallback",
        ]
        print(
            format_table(
                [[r[h] for h in headers_cnn] for r in cnn],
                headers_cnn,
                "Binary digits CNN inference: packed ops (freeze_binary) vs the Keras path",
            )
        )
    print(
        "conditions:",
        {
            **timings[0]["conditions"],
            "load_average_after": timings[-1]["conditions"]["load_average_after"],
        },
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {"conditions": conditions, "matmul": mm, "cnn": cnn, "timings": timings}
    write_text(RESULTS, json.dumps(payload, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

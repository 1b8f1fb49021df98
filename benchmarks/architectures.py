"""MobileNetV2 (keras.applications, weights=None): float vs int8 QAT vs channel-pruned vs low-rank.

For each configuration (alpha 0.35 and 1.0; 96x96 and 224x224 inputs) four arms:

Every arm starts from the same float model whose BatchNorm statistics were set
from one batch of the synthetic data (untrained, MobileNetV2's activations vanish
block after block, to logits around 1e-11, and agreement numbers would mean nothing).

* ``float``: that model, float32 TFLite;
* ``qat_int8``: ``tfc.quantize_model`` (BatchNorm folded, ReLU6 fused, residual adds
  and pooling with their own ranges), a few training steps on synthetic data so the
  BatchNorm statistics and fake-quant ranges are set, then full-integer export with
  no calibration data;
* ``pruned50_shrunk``: ``tfc.callbacks.GradualPruning(0.5, granularity="channel")``
  on the expansion 1x1 convs and the first/last convs (a pruned channel is removed
  with its depthwise channel and BatchNorms), a few steps, then ``tfc.shrink_model``;
  float32 TFLite; the shrunk model's outputs are checked against the masked model;
* ``lowrank``: ``tfc.factorize_model`` on the 1x1 convolutions and the classifier
  (``--lowrank-ratio`` of their parameters, SVD-initialised), float32 TFLite.

Per arm: TFLite bytes, gzip bytes, interpreter latency (one thread, batch 1, median
of ``--runs`` invokes per round, minimum over ``--rounds`` rounds, every arm's
interpreter interleaved in each round in ONE process) and ratios to ``float``
measured in the same run; parameters and MACs from ``tfc.summary``; TFLite-vs-Keras
agreement (max abs difference, top-1 agreement) on the synthetic inputs.

Accuracy is NOT meaningful here: with ``weights=None`` the network is untrained and
the data are random, so only size, speed and TFLite-vs-Keras agreement are reported.

Run: ``python3 run.py bench architectures`` (``--quick``: alpha 1.0 at 224x224 and
alpha 0.35 at 96x96 only; ``--configs 1.0x224 --arms float,qat_int8`` for a subset).
Writes ``benchmarks/results/architectures.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import tfcompress as tfc
from tfcompress.core.io import write_text
from tfcompress.reporting.table import format_table
from tfcompress.tflite_export import TFLiteModel, export

RESULTS = Path(__file__).parent / "results"
ARMS = ("float", "qat_int8", "pruned50_shrunk", "lowrank")
ALL_CONFIGS = ("0.35x96", "0.35x224", "1.0x96", "1.0x224")
QUICK_CONFIGS = ("1.0x224", "0.35x96")
NOTE = (
    "weights=None and random data: accuracy is not meaningful; sizes, latency and "
    "TFLite-vs-Keras agreement are."
)


def _parse_config(text: str) -> tuple[float, int]:
    alpha, _, size = text.partition("x")
    return float(alpha), int(size)


def _mobilenet(alpha: float, size: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    # Logits out (no softmax): with untrained weights the 1000 probabilities are all
    # ~0.001, below int8 softmax's 1/256 step, so their arg-max says nothing.
    return keras.applications.MobileNetV2(
        input_shape=(size, size, 3),
        alpha=alpha,
        weights=None,
        classes=1000,
        classifier_activation=None,
    )


def _calibrate_batch_norm(model: keras.Model, x: np.ndarray) -> keras.Model:
    """Sets every BatchNorm's moving statistics to those of ``x`` (one training-mode pass).

    Untrained, a MobileNetV2's activations shrink block after block (logits around
    1e-11), which makes any agreement number meaningless; with real statistics the
    activations have the scale a trained network's have. Every arm starts from it.
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(norms, saved):
        layer.momentum = momentum
    return model


def _data(size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, size, size, 3)).astype("float32"), rng.integers(0, 1000, n)


def _fit(model: keras.Model, x, y, steps: int, batch: int, callbacks=None) -> None:
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(1e-4), loss)
    n = min(len(x), steps * batch)
    epochs = max(1, (steps * batch) // n)
    model.fit(x[:n], y[:n], batch_size=batch, epochs=epochs, verbose=0, callbacks=callbacks)


def _prune_selection(layer: keras.layers.Layer) -> bool:
    # Expansion convs and the first/last convs: their channels stay inside a block
    # (or feed only the pooled classifier), so no residual add pins them.
    return type(layer) is keras.layers.Conv2D and (
        layer.name.endswith("_expand") or layer.name in ("Conv1", "Conv_1")
    )


def _lowrank_selection(layer: keras.layers.Layer) -> bool:
    if type(layer) is keras.layers.Dense:
        return True
    return type(layer) is keras.layers.Conv2D and tuple(layer.kernel_size) == (1, 1)


def _stats(model: keras.Model) -> dict:
    s = tfc.summary(model, print_fn=None)
    return {"params": int(s.total_params), "macs": int(s.total_macs)}


def _export(model, path, quantization, x) -> dict:
    report = export(model, path, quantization=quantization, verify_data=x, verbose=0)
    scale = float(np.max(np.abs(model.predict(x, verbose=0))))
    return {
        "relative_max_abs_diff": report.max_abs_diff / scale if scale else None,
        "bytes": report.bytes,
        "gzip_bytes": report.gzip_bytes,
        "max_abs_diff": report.max_abs_diff,
        "top1_agreement": report.top1_agreement,
        "op_counts": report.op_counts,
    }


def _arm(name: str, base: keras.Model, x, y, args, path: Path) -> tuple[dict, keras.Model]:
    """Builds one arm from ``base`` (a fresh float model) and exports it."""
    verify = x[: args.verify]
    info: dict = {}
    if name == "float":
        model = base
        info.update(_export(model, path, None, verify))
    elif name == "qat_int8":
        model = tfc.quantize_model(base)
        _fit(model, x, y, args.steps, args.batch)
        info.update(_export(model, path, "int8", verify))
        info["quantizable_ops_int8"] = all(
            k.endswith("[int8]")
            for k in info["op_counts"]
            if k.split("[")[0] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD")
        )
    elif name == "pruned50_shrunk":
        model = base
        pruning = tfc.callbacks.GradualPruning(
            0.5,
            begin_step=0,
            end_step=max(1, args.steps - 1),
            frequency=1,
            granularity="channel",
            layers=_prune_selection,
        )
        _fit(model, x, y, args.steps, args.batch, callbacks=[pruning])
        small = tfc.shrink_model(model)
        masked_out = model.predict(verify, verbose=0)
        small_out = small.predict(verify, verbose=0)
        info["masked_vs_shrunk_max_abs_diff"] = float(np.max(np.abs(masked_out - small_out)))
        info["masked_params_macs"] = _stats(model)
        model = small
        info.update(_export(model, path, None, verify))
    elif name == "lowrank":
        model, report = tfc.factorize_model(
            base,
            target_ratio=args.lowrank_ratio,
            layers=_lowrank_selection,
            return_report=True,
            verbose=0,
        )
        info["factorized_layers"] = len(report.factorized)
        info["selected_param_ratio"] = report.param_ratio
        info.update(_export(model, path, None, verify))
    else:
        raise ValueError(f"unknown arm {name!r}; expected one of {ARMS}")
    info.update(_stats(model))
    return info, model


def _latencies(files: dict[str, Path], x: np.ndarray, rounds: int, runs: int) -> dict:
    """Min over rounds of the median invoke time (ms); arms interleaved in every round."""
    models = {arm: TFLiteModel(str(p), num_threads=1) for arm, p in files.items()}
    best = dict.fromkeys(models, float("inf"))
    for _ in range(rounds):
        for arm, lite in models.items():
            best[arm] = min(best[arm], lite.latency_ms(x[:1], runs=runs, warmup=2))
    return best


def run_config(config: str, args) -> dict:
    alpha, size = _parse_config(config)
    x, y = _data(size, max(args.batch * args.steps, args.verify), args.seed)
    out = RESULTS / "architectures"
    out.mkdir(parents=True, exist_ok=True)
    arms: dict[str, dict] = {}
    files: dict[str, Path] = {}
    for arm in args.arms:
        path = out / f"mobilenetv2_{config}_{arm}.tflite"
        start = time.perf_counter()
        try:
            base = _calibrate_batch_norm(_mobilenet(alpha, size, args.seed), x[: args.batch])
            info, _ = _arm(arm, base, x, y, args, path)
            files[arm] = path
        except Exception as error:  # one failing arm must not hide the others
            traceback.print_exc()
            info = {"error": f"{type(error).__name__}: {error}"}
        info["build_export_s"] = round(time.perf_counter() - start, 1)
        arms[arm] = info
        print(
            f"[{config}] {arm}: {json.dumps({k: v for k, v in info.items() if k != 'op_counts'})}"
        )
        sys.stdout.flush()
    latency = _latencies(files, x, args.rounds, args.runs)
    base = arms.get("float", {})
    for arm, info in arms.items():
        if arm in latency:
            info["latency_ms"] = latency[arm]
        for key in ("bytes", "gzip_bytes", "latency_ms", "params", "macs"):
            if key in info and base.get(key):
                info[f"{key}_ratio"] = info[key] / base[key]
    return {"alpha": alpha, "input_size": size, "arms": arms}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_CONFIGS)}")
    parser.add_argument("--configs", default=None, help=f"comma list from {', '.join(ALL_CONFIGS)}")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma list from {', '.join(ARMS)}")
    parser.add_argument("--steps", type=int, default=4, help="training steps (QAT, pruning)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--verify", type=int, default=8, help="inputs for TFLite-vs-Keras")
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds (min is kept)")
    parser.add_argument("--runs", type=int, default=10, help="invokes per round (median)")
    parser.add_argument("--lowrank-ratio", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS / "architectures.json"))
    args = parser.parse_args()
    configs = (
        args.configs.split(",") if args.configs else (QUICK_CONFIGS if args.quick else ALL_CONFIGS)
    )
    args.arms = [a for a in args.arms.split(",") if a]
    for arm in args.arms:
        if arm not in ARMS:
            parser.error(f"--arms: unknown arm {arm!r}; expected some of {', '.join(ARMS)}")
    print(NOTE)
    results = {"note": NOTE, "settings": {k: v for k, v in vars(args).items()}, "configs": {}}
    rows = []
    for config in configs:
        result = run_config(config, args)
        results["configs"][config] = result
        for arm, info in result["arms"].items():
            rows.append(
                [
                    f"MobileNetV2 {config}",
                    arm,
                    info.get("params"),
                    info.get("macs"),
                    info.get("bytes"),
                    info.get("gzip_bytes"),
                    info.get("bytes_ratio"),
                    info.get("gzip_bytes_ratio"),
                    info.get("latency_ms"),
                    info.get("latency_ms_ratio"),
                    info.get("macs_ratio"),
                    info.get("relative_max_abs_diff"),
                    info.get("top1_agreement"),
                    info.get("error", ""),
                ]
            )
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        write_text(args.output, json.dumps(results, indent=2, default=str))
    headers = [
        "model", "arm", "params", "MACs", "tflite B", "gzip B", "size x", "gzip x",
        "latency ms", "latency x", "MACs x", "rel. diff", "top1 agree", "error",
    ]  # fmt: skip
    print(format_table(rows, headers, title=f"MobileNetV2 arms vs float (one run). {NOTE}"))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

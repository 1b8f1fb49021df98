"""Deep Compression on Keras 3: prune -> cluster -> Huffman, stage by stage.

Prints and writes ``benchmarks/results/deep_compression.json``:

1. k-means timing: ``tfcompress.ops.kmeans_1d`` on a 4096x4096 float32 matrix
   into 256 clusters vs scikit-learn's KMeans fitted on a 1% sample, both
   errors measured on all weights, in the same process.
2. For LeNet-300-100 (``digits_mlp``) and the digits CNN: accuracy and size
   after pruning, after clustering (+ centroid fine-tuning), after Huffman
   (``tfc.pack``), vs the float32 bytes of the weights; the clustered model's
   TFLite size with and without gzip; TFMOT ``cluster_weights`` on the same
   float model in a ``TF_USE_LEGACY_KERAS=1`` subprocess.

Pruning: tfc.callbacks.GradualPruning when it is available; otherwise a plain
magnitude mask re-applied after every batch (defined only in this file).

Run: ``python3 run.py bench deep_compression [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import tfcompress as tfc
from tfcompress.clustering.kmeans import assign_clusters, kmeans_1d
from tfcompress.core.io import write_text
from tfcompress.models import accuracy, digits_cnn, digits_mlp, train_classifier
from tfcompress.reporting.table import format_table

RESULTS = Path(__file__).parent / "results"


# ------------------------------------------------------------------ k-means timing


def kmeans_timing(repeats: int = 3) -> dict:
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    weights = (rng.standard_normal((4096, 4096)) * 0.02).astype("float32")
    flat = weights.reshape(-1)
    ours_t, sk_t = [], []
    ours = theirs = None
    for r in range(repeats):  # interleaved arms, min over repeats
        start = time.perf_counter()
        ours = kmeans_1d(weights, 256)
        ours_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        sample = flat[rng.choice(flat.size, flat.size // 100, replace=False)]
        km = KMeans(256, n_init=1, random_state=r).fit(sample[:, None])
        sk_t.append(time.perf_counter() - start)
        centres = np.sort(km.cluster_centers_.ravel()).astype("float32")
        labels = assign_clusters(flat, centres)
        sse = float(np.sum(np.square(flat - centres[labels], dtype=np.float64)))
        theirs = sse if theirs is None else min(theirs, sse)
    load = os.getloadavg()[0]
    return {
        "weights": flat.size,
        "clusters": 256,
        "tfcompress_seconds": min(ours_t),
        "sklearn_1pct_seconds": min(sk_t),
        "tfcompress_sse": ours.inertia,
        "sklearn_1pct_sse_on_all": theirs,
        "sse_ratio_ours_over_sklearn": ours.inertia / theirs,
        "speedup": min(sk_t) / min(ours_t),
        "load_average_1min": load,
        "cpus": os.cpu_count(),
    }


# ------------------------------------------------------------------ pruning


def _prunable(model: keras.Model) -> list[keras.layers.Layer]:
    return [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))
    ]


class _MagnitudeMask(keras.callbacks.Callback):
    """Minimal stand-in for GradualPruning: fixed masks re-applied after each batch."""

    def __init__(self, masks: dict):
        super().__init__()
        self.masks = masks

    def on_train_batch_end(self, batch, logs=None):
        for layer, mask in self.masks.items():
            layer.kernel.assign(keras.ops.where(mask > 0, layer.kernel, 0.0))


def _magnitude_masks(model: keras.Model, sparsity: dict[str, float]) -> dict:
    masks = {}
    for layer in _prunable(model):
        kernel = np.asarray(layer.kernel)
        s = sparsity.get(layer.name, 0.0)
        threshold = np.quantile(np.abs(kernel), s) if s > 0 else -1
        masks[layer] = (np.abs(kernel) > threshold).astype("float32")
        layer.kernel.assign(np.where(masks[layer] > 0, kernel, 0.0))
    return masks


def prune(model, data, sparsity: dict[str, float], steps: int, epochs: int) -> str:
    """Prunes ``model`` in place; returns which method was used."""
    gradual = getattr(tfc.callbacks, "GradualPruning", None)
    if gradual is not None:
        # One global magnitude ranking to the size-weighted mean of the targets.
        sizes = {layer.name: int(np.prod(layer.kernel.shape)) for layer in _prunable(model)}
        target = sum(sparsity.get(n, 0.0) * s for n, s in sizes.items()) / sum(sizes.values())
        callback = gradual(target_sparsity=target, scope="global", frequency=20)
        train_classifier(model, data, epochs=steps * epochs, callbacks=[callback])
        return f"tfc.callbacks.GradualPruning(global, {target:.3f})"
    for step in range(1, steps + 1):
        fraction = {k: v * step / steps for k, v in sparsity.items()}
        masks = _magnitude_masks(model, fraction)
        train_classifier(model, data, epochs=epochs, callbacks=[_MagnitudeMask(masks)])
    return "magnitude mask (benchmark-local)"


# ------------------------------------------------------------------ TFMOT


TFMOT_SCRIPT = r"""
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tensorflow as tf, tf_keras
import tensorflow_model_optimization as tfmot
d = np.load(sys.argv[1]); out = sys.argv[2]; clusters = int(sys.argv[3]); kind = sys.argv[4]
x, y, xt, yt = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
L = tf_keras.layers
tf_keras.utils.set_random_seed(0)
if kind == "mlp":
    model = tf_keras.Sequential([L.Input((64,)), L.Dense(300, activation="relu"),
                                 L.Dense(100, activation="relu"), L.Dense(10)])
else:
    model = tf_keras.Sequential([L.Input((8, 8, 1)),
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.Conv2D(64, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(128, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(128, activation="relu"), L.Dense(10)])
model.set_weights([d[f"w{i}"] for i in range(len(model.weights))])
CW = tfmot.clustering.keras
clustered = CW.cluster_weights(model, number_of_clusters=clusters,
    cluster_centroids_init=CW.CentroidInitialization.KMEANS_PLUS_PLUS)
loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
clustered.compile(tf_keras.optimizers.Adam(1e-4), loss, metrics=["accuracy"])
clustered.fit(x, y, epochs=int(sys.argv[5]), batch_size=32, verbose=0)
final = CW.strip_clustering(clustered)
acc = float(np.mean(np.argmax(final.predict(xt, verbose=0), 1) == yt))
conv = tf.lite.TFLiteConverter.from_keras_model(final)
blob = conv.convert()
import gzip
json.dump({"accuracy": acc, "tflite_bytes": len(blob),
           "tflite_gzip_bytes": len(gzip.compress(blob, 9))}, open(out, "w"))
"""


def tfmot_cluster(model, data, clusters: int, kind: str, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
        npz = Path(tmp) / "d.npz"
        np.savez(
            npz,
            x_train=data.x_train,
            y_train=data.y_train,
            x_test=data.x_test,
            y_test=data.y_test,
            **arrays,
        )
        out = Path(tmp) / "out.json"
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                TFMOT_SCRIPT,
                str(npz),
                str(out),
                str(clusters),
                kind,
                str(epochs),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            return {"error": proc.stderr[-2000:]}
        return json.loads(out.read_text())


# ------------------------------------------------------------------ pipeline


def _float_bytes(model: keras.Model) -> int:
    return 4 * model.count_params()


def pipeline(
    name: str,
    kind: str,
    data,
    sparsity: dict,
    clusters: int,
    epochs: int,
    prune_steps: int,
    prune_epochs: int,
    finetune_epochs: int,
    run_tfmot: bool,
) -> dict:
    keras.utils.set_random_seed(0)
    model = digits_mlp() if kind == "mlp" else digits_cnn()
    train_classifier(model, data, epochs=epochs)
    float_acc = accuracy(model, data.x_test, data.y_test)
    float_bytes = _float_bytes(model)
    with tempfile.TemporaryDirectory() as tmp:
        float_pack = tfc.pack(model, Path(tmp) / "float.tfcp").bytes
        float_model_copy = keras.models.clone_model(model)
        float_model_copy.set_weights(model.get_weights())

        method = prune(model, data, sparsity, prune_steps, prune_epochs)
        pruned_acc = accuracy(model, data.x_test, data.y_test)
        pruned_report = tfc.pack(model, Path(tmp) / "pruned.tfcp")
        kept = sum(int(np.count_nonzero(np.asarray(layer.kernel))) for layer in _prunable(model))
        total = sum(int(np.prod(layer.kernel.shape)) for layer in _prunable(model))
        # "After pruning" as Deep Compression counts it: nonzeros + relative indices.
        clustered = tfc.cluster_model(model, clusters=clusters, preserve_sparsity=True)
        clustered_acc0 = accuracy(clustered, data.x_test, data.y_test)
        train_classifier(clustered, data, epochs=finetune_epochs, learning_rate=1e-4)
        clustered_acc = accuracy(clustered, data.x_test, data.y_test)
        summary = tfc.summary(clustered, print_fn=None)
        packed = tfc.pack(clustered, Path(tmp) / "clustered.tfcp")
        restored = tfc.unpack(packed.path)
        exact = bool(
            np.array_equal(
                restored.predict(data.x_test, verbose=0), clustered.predict(data.x_test, verbose=0)
            )
        )
        weights_bytes = packed.bytes - packed.config_bytes
        export = tfc.tflite_export.export(
            clustered,
            Path(tmp) / "c.tflite",
            verbose=0,
            verify_data=data.x_test,
            verify_labels=data.y_test,
        )
        float_export = tfc.tflite_export.export(
            float_model_copy, Path(tmp) / "f.tflite", verbose=0, verify=False
        )
    result = {
        "model": name,
        "params": model.count_params(),
        "float32_weight_bytes": float_bytes,
        "float_accuracy": float_acc,
        "pruning": method,
        "kernel_sparsity": 1 - kept / total,
        "pruned_accuracy": pruned_acc,
        "pruned_pack_bytes": pruned_report.bytes,
        "clusters": clusters,
        "clustered_accuracy_before_finetune": clustered_acc0,
        "clustered_accuracy": clustered_acc,
        "summary_bits_per_weight": summary.bits_per_weight,
        "summary_bytes_fixed_width": summary.total_bytes,
        "pack_bytes": packed.bytes,
        "pack_config_bytes": packed.config_bytes,
        "pack_weight_bytes": weights_bytes,
        "float_pack_bytes": float_pack,
        "ratio_weights": float_bytes / weights_bytes,
        "ratio_file": float_bytes / packed.bytes,
        "unpack_exact": exact,
        "clustered_tflite_bytes": export.bytes,
        "clustered_tflite_gzip_bytes": export.gzip_bytes,
        "clustered_tflite_accuracy": export.tflite_accuracy,
        "float_tflite_bytes": float_export.bytes,
        "float_tflite_gzip_bytes": float_export.gzip_bytes,
        "tensors": packed.tensors,
    }
    if run_tfmot:
        result["tfmot"] = tfmot_cluster(float_model_copy, data, clusters, kind, finetune_epochs)
    return result


def _stage_rows(r: dict) -> list[list]:
    fb = r["float32_weight_bytes"]
    rows = [
        ["float32", round(100 * r["float_accuracy"], 2), fb, 1.0, "weights as float32"],
        [
            "after pruning",
            round(100 * r["pruned_accuracy"], 2),
            r["pruned_pack_bytes"],
            round(fb / r["pruned_pack_bytes"], 2),
            f"{100 * r['kernel_sparsity']:.1f}% kernel zeros, tfc.pack sparse ({r['pruning']})",
        ],
        [
            "after clustering",
            round(100 * r["clustered_accuracy"], 2),
            round(r["summary_bytes_fixed_width"]),
            round(fb / r["summary_bytes_fixed_width"], 2),
            f"{r['clusters']} clusters, fixed-width indices ({r['summary_bits_per_weight']:.2f} "
            "bits/param incl. biases)",
        ],
        [
            "after Huffman",
            round(100 * r["clustered_accuracy"], 2),
            r["pack_bytes"],
            round(r["ratio_file"], 2),
            f"tfc.pack file incl. {r['pack_config_bytes']} B config; weights alone "
            f"{r['pack_weight_bytes']} B = {r['ratio_weights']:.1f}x",
        ],
        [
            "clustered TFLite",
            round(100 * r["clustered_tflite_accuracy"], 2),
            r["clustered_tflite_bytes"],
            round(fb / r["clustered_tflite_bytes"], 2),
            f"gzip {r['clustered_tflite_gzip_bytes']} B = "
            f"{fb / r['clustered_tflite_gzip_bytes']:.1f}x (float TFLite gzip "
            f"{r['float_tflite_gzip_bytes']} B)",
        ],
    ]
    t = r.get("tfmot")
    if t and "error" not in t:
        rows.append(
            [
                "TFMOT cluster_weights",
                round(100 * t["accuracy"], 2),
                t["tflite_bytes"],
                round(fb / t["tflite_bytes"], 2),
                f"TFLite; gzip {t['tflite_gzip_bytes']} B = "
                f"{fb / t['tflite_gzip_bytes']:.1f}x (no pruning, same clusters)",
            ]
        )
    elif t:
        rows.append(["TFMOT cluster_weights", None, None, None, "failed: " + t["error"][-200:]])
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="MLP only, fewer epochs")
    parser.add_argument("--no-tfmot", action="store_true")
    parser.add_argument("--skip-kmeans", action="store_true")
    args = parser.parse_args(argv)
    results: dict = {}
    if not args.skip_kmeans:
        km = kmeans_timing()
        results["kmeans"] = km
        print(
            format_table(
                [
                    [
                        "tfcompress kmeans_1d (all weights)",
                        round(km["tfcompress_seconds"], 3),
                        km["tfcompress_sse"],
                        1.0,
                    ],
                    [
                        "scikit-learn KMeans (1% sample)",
                        round(km["sklearn_1pct_seconds"], 3),
                        km["sklearn_1pct_sse_on_all"],
                        round(1 / km["sse_ratio_ours_over_sklearn"], 4),
                    ],
                ],
                ["method", "seconds", "SSE on all 16.7M weights", "SSE / ours"],
                title=f"k-means 4096x4096 -> 256 clusters ({km['cpus']} CPUs, load "
                f"{km['load_average_1min']:.1f}); speedup {km['speedup']:.1f}x, "
                f"SSE ratio ours/sklearn {km['sse_ratio_ours_over_sklearn']:.4f}",
            )
        )
    data_flat = tfc.datasets.load_digits(flatten=True)
    data_img = tfc.datasets.load_digits()
    configs = [
        (
            "LeNet-300-100",
            "mlp",
            data_flat,
            {"dense1": 0.92, "dense2": 0.965, "logits": 0.8},
            16,
            30,
            4,
            10,
            8,
        )
    ]
    if not args.quick:
        configs.append(
            (
                "digits CNN",
                "cnn",
                data_img,
                {"conv1": 0.5, "conv2": 0.8, "conv3": 0.9, "dense1": 0.95, "logits": 0.7},
                16,
                10,
                3,
                3,
                4,
            )
        )
    for name, kind, data, sparsity, clusters, epochs, steps, pe, fe in configs:
        r = pipeline(
            name, kind, data, sparsity, clusters, epochs, steps, pe, fe, run_tfmot=not args.no_tfmot
        )
        results[name] = r
        print(
            format_table(
                _stage_rows(r),
                ["stage", "test acc %", "bytes", "x smaller", "note"],
                title=f"Deep Compression: {name} ({r['params']:,} params, "
                f"{r['float32_weight_bytes']:,} B float32)",
            )
        )
        print(f"unpack(pack(model)) outputs identical: {r['unpack_exact']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / "deep_compression.json", json.dumps(results, indent=2, default=str))
    print(f"wrote {RESULTS / 'deep_compression.json'}")
    return results


if __name__ == "__main__":
    main()

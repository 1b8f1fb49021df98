"""tfc.oneshot.quantize(method="gptq") next to Keras' own ``model.quantize("gptq")``.

Keras 3 runs GPTQ on the Dense/EinsumDense layers inside the "sequential
blocks" of a token model (after "pre-block" layers such as an Embedding). This
script builds the smallest model of that shape, a byte-level model
``Embedding -> blocks of Dense(gelu) -> Dense -> head``, trains it briefly on the
bundled corpus, and quantizes the blocks' Dense layers to 4 bits with

* ``tfc.oneshot.quantize`` (GPTQ and round-to-nearest; weight-only,
  symmetric, one step per 128 inputs of a row);
* ``model.quantize("gptq", config=keras.quantizers.GPTQConfig(...))`` with the
  same bits, groups of 128, dampening and calibration text, symmetric (like
  ours) and asymmetric (Keras' default).

Groups of 128 rather than one step per row: Keras 3.15's GPTQ with
``group_size=-1`` fails on a layer with more than 128 inputs (it stores one
scale per 128-column block into a one-column ``kernel_scale``).

It reports, on held-out windows, bits per byte and the relative error of the
logits ``||f_q(x) - f(x)||^2 / ||f(x)||^2``, plus the wall time of each. Keras
draws its calibration windows from the same text with its own sampler, so
the two see the same bytes, not the same windows. No thresholds: one run, numbers
printed (and returned by :func:`compare`).

    .venv/bin/python benchmarks/oneshot_vs_keras_gptq.py [--samples 128] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np

import tfcompress as tfc
from tfcompress import language_model as lm

GROUP = 128


def build_model(context: int = 64, d_model: int = 64, ffn: int = 256, blocks: int = 2):
    """Tokens -> Embedding -> ``blocks`` x Sequential[Dense(ffn, gelu), Dense(d)] -> head."""
    tokens = keras.Input((context,), dtype="int32", name="bytes")
    embed = keras.layers.Embedding(256, d_model, name="embed")
    x = embed(tokens)
    stages = []
    for i in range(blocks):
        block = keras.Sequential(
            [
                keras.Input((context, d_model)),
                keras.layers.Dense(ffn, activation="gelu", name=f"block{i}_up"),
                keras.layers.Dense(d_model, name=f"block{i}_down"),
            ],
            name=f"block{i}",
        )
        stages.append(block)
        x = block(x)
    logits = keras.layers.Dense(256, name="head")(x)
    return keras.Model(tokens, logits, name="byte_mlp"), embed, stages


def _relative_logit_error(model, reference, x):
    got = model.predict(x, batch_size=64, verbose=0).astype(np.float64)
    return float(np.sum((got - reference) ** 2) / np.sum(reference**2))


def compare(samples: int = 128, context: int = 64, epochs: int = 2, seed: int = 0) -> dict:
    """Trains the model, quantizes it three ways, returns the numbers."""
    keras.utils.set_random_seed(seed)
    corpus = tfc.datasets.load_text_corpus()
    model, embed, blocks = build_model(context)
    x_train, y_train = lm.sample_windows(corpus.train, 4096, context, seed=seed)
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    x_test, y_test = lm.eval_windows(corpus.test, context, limit=512)
    reference = model.predict(x_test, batch_size=64, verbose=0).astype(np.float64)
    float_bpb, _ = lm.bits_per_byte(model, x_test, y_test)

    # The same calibration text for both: `samples` windows of a contiguous slice.
    start = 1_000_000
    text = corpus.train[start : start + samples * context].astype(np.int32)
    calibration = text.reshape(samples, context)
    targets = [f"block{i}_{part}" for i in range(len(blocks)) for part in ("up", "down")]
    rows = [{"method": "float", "bits_per_byte": float_bpb, "logit_error": 0.0, "seconds": 0.0}]

    for method in ("rtn", "gptq"):
        began = time.perf_counter()
        quant, report = tfc.oneshot.quantize(
            model,
            calibration,
            bits=4,
            method=method,
            group_size=GROUP,
            layers=targets,
            activations=False,
            verbose=0,
            return_report=True,
        )
        seconds = time.perf_counter() - began
        rows.append(
            {
                "method": f"tfcompress {method}",
                "bits_per_byte": lm.bits_per_byte(quant, x_test, y_test)[0],
                "logit_error": _relative_logit_error(quant, reference, x_test),
                "seconds": seconds,
                "layer_errors": {r.name: r.error for r in report.layers},
            }
        )

    for symmetric in (True, False):
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        inner = [clone.get_layer(b.name) for b in blocks]
        config = keras.quantizers.GPTQConfig(
            dataset=[text],
            tokenizer=lambda s: s,  # the dataset is already bytes (token ids)
            weight_bits=4,
            num_samples=samples,
            sequence_length=context,
            hessian_damping=0.01,
            group_size=GROUP,
            symmetric=symmetric,
            activation_order=False,
            quantization_layer_structure={
                "pre_block_layers": [clone.get_layer(embed.name)],
                "sequential_blocks": inner,
            },
        )
        began = time.perf_counter()
        clone.quantize("gptq", config=config)
        seconds = time.perf_counter() - began
        rows.append(
            {
                "method": f"keras gptq ({'symmetric' if symmetric else 'asymmetric'})",
                "bits_per_byte": lm.bits_per_byte(clone, x_test, y_test)[0],
                "logit_error": _relative_logit_error(clone, reference, x_test),
                "seconds": seconds,
            }
        )
    return {
        "model": "Embedding(256, 64) -> 2 x [Dense(256, gelu), Dense(64)] -> Dense(256)",
        "quantized": targets,
        "bits": 4,
        "calibration_windows": samples,
        "context": context,
        "eval_windows": len(x_test),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = compare(args.samples, args.context, args.epochs, args.seed)
    for row in result["rows"]:
        print(
            f"{row['method']:<28} bits/byte {row['bits_per_byte']:.4f}  "
            f"logit error {row['logit_error']:.3e}  {row['seconds']:.1f} s"
        )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

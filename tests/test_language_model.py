"""The language-model workload: bundled corpus, the byte-level decoder, its metric, the
shipped weights and their TFLite export."""

from __future__ import annotations

import gzip
import math

import keras
import numpy as np
import pytest
from serialization_checks import check_layer_serialization

import tfcompress as tfc
from tfcompress.datasets import load_text_corpus
from tfcompress.export.interpreter import TFLiteModel
from tfcompress.language_model import (
    PositionEmbedding,
    bits_per_byte,
    byte_lm,
    eval_windows,
    gzip_bits_per_byte,
    load_byte_lm,
    sample_windows,
    shipped_lm_record,
)


@pytest.fixture(scope="module")
def corpus():
    return load_text_corpus()


@pytest.fixture(scope="module")
def shipped():
    return load_byte_lm()


def test_corpus_splits_whole_files_and_matches_its_manifest(corpus):
    manifest = corpus.manifest
    assert len(corpus.train) == manifest["splits"]["train"]["bytes"] == 4_285_166
    assert len(corpus.test) == manifest["splits"]["test"]["bytes"] == 413_554
    names = {f["split"]: set() for f in manifest["files"]}
    for f in manifest["files"]:
        names[f["split"]].add(f["name"])
    assert not names["train"] & names["test"] and len(names["test"]) == 16
    assert b"def " in corpus.test[:20000].tobytes()  # real Python source


def test_gzip_anchor_is_gzip_on_the_same_bytes(corpus):
    raw = corpus.test[:50_000].tobytes()
    expected = 8 * len(gzip.compress(raw, 9)) / len(raw)
    assert gzip_bits_per_byte(corpus.test[:50_000]) == pytest.approx(expected)
    assert 1.5 < gzip_bits_per_byte(corpus.test) < 2.5


def test_windows_pair_each_byte_with_the_next(corpus):
    x, y = sample_windows(corpus.train, 4, context=16, seed=3)
    assert x.shape == y.shape == (4, 16) and x.dtype == np.int32
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    xe, ye = eval_windows(corpus.test[:1000], context=100)
    assert xe.shape == (9, 100)
    np.testing.assert_array_equal(xe.reshape(-1), corpus.test[:900])
    np.testing.assert_array_equal(ye.reshape(-1), corpus.test[1:901])


def test_bits_per_byte_matches_numpy_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 256))
    y = rng.integers(0, 256, size=(2, 5))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = -np.mean(np.log2(np.take_along_axis(p, y[..., None], -1)))
    bpb, acc = bits_per_byte(lambda x: logits[: len(x)], np.zeros((2, 5), np.int32), y)
    assert bpb == pytest.approx(expected, rel=1e-9)
    assert acc == pytest.approx(np.mean(logits.argmax(-1) == y))


def test_model_is_causal():
    model = byte_lm(context=16, d_model=32, num_layers=1, num_heads=2, ffn_units=64)
    x = np.random.default_rng(0).integers(0, 256, size=(1, 16)).astype(np.int32)
    changed = x.copy()
    changed[0, 10] = (changed[0, 10] + 1) % 256
    a, b = np.asarray(model(x)), np.asarray(model(changed))
    np.testing.assert_allclose(a[0, :10], b[0, :10], atol=1e-6)  # the past cannot see byte 10
    assert np.abs(a[0, 10:] - b[0, 10:]).max() > 1e-4


def test_position_embedding_serializes_and_checks_its_argument():
    check_layer_serialization(lambda: PositionEmbedding(8), (2, 8, 4))
    with pytest.raises(ValueError, match="sequence_length must be a positive int; received 0"):
        PositionEmbedding(0)


def test_shipped_model_beats_the_bound_and_is_what_the_record_says(shipped, corpus):
    record = shipped_lm_record()
    assert shipped.count_params() == record["parameters"] == 677_248
    assert record["heldout"]["bits_per_byte"] <= 2.5
    x, y = eval_windows(corpus.test, 128, limit=48)
    bpb, acc = bits_per_byte(shipped, x, y)
    assert math.isfinite(bpb) and bpb <= 2.5 and acc > 0.5
    assert bpb < record["heldout"]["gzip9_bits_per_byte"] + 0.6


@pytest.mark.parametrize("quantization", [None, "int8"])
def test_shipped_model_exports_to_tflite_and_agrees(shipped, corpus, tmp_path, quantization):
    x, y = eval_windows(corpus.test, 128, limit=16)
    calibration = sample_windows(corpus.train, 64, seed=5)[0] if quantization else None
    report = tfc.tflite_export.export(
        shipped,
        tmp_path / "lm.tflite",
        quantization=quantization,
        representative_data=calibration,
        verify_data=x,
        verbose=0,
    )
    assert report.verified
    runner = TFLiteModel(tmp_path / "lm.tflite")
    keras_bpb, _ = bits_per_byte(shipped, x, y)
    file_bpb, _ = bits_per_byte(lambda b: runner.predict(b), x, y)
    if quantization is None:
        assert report.max_abs_diff < 1e-3 and report.top1_agreement == 1.0
        assert file_bpb == pytest.approx(keras_bpb, abs=1e-4)
    else:  # int8 weights and activations: a small, bounded loss
        assert report.top1_agreement > 0.9
        assert abs(file_bpb - keras_bpb) < 0.15
    assert report.bytes < (2.8e6 if quantization is None else 0.9e6)


def test_fresh_decoder_rejects_heads_that_do_not_divide_width():
    with pytest.raises(ValueError, match="d_model must be divisible by num_heads"):
        byte_lm(d_model=130, num_heads=4)
    assert isinstance(byte_lm(context=8, d_model=16, num_layers=1, num_heads=2), keras.Model)

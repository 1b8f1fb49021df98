"""The support matrix: every compression technique on every architecture of issue #10.

``EXPECTED`` is the one source of truth: each (technique, architecture) cell
is either ``OK`` (trains a few steps, exports to TFLite, the file agrees with
Keras within the technique's stated tolerance, and the technique's own
numbers hold) or a :class:`Refused` error that the cell asserts exactly,
together with "the user's model is unchanged". ``docs/support.md`` carries
the table generated from it; a test keeps the two in sync. Regenerate with::

    PYTHONPATH=. python tests/test_support_matrix.py --print-table
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras
import numpy as np
import pytest
import support_architectures as archs

import tfcompress as tfc
from tfcompress.pruning.masks import matrix_view
from tfcompress.pruning.prunable import find_prunable

DOC = Path(__file__).resolve().parents[1] / "docs" / "support.md"


@dataclasses.dataclass(frozen=True)
class Ok:
    """The cell works end to end; ``note`` becomes a footnote of the table.

    ``smaller=False`` records that shrink_model finds no channel it may remove
    there (the copy is then as large as the pruned model, outputs still equal).
    """

    note: str | tuple[str, ...] | None = None
    smaller: bool = True


@dataclasses.dataclass(frozen=True)
class Refused:
    """The cell raises ``error`` whose message contains every fragment, before any change."""

    error: type[Exception]
    fragments: tuple[str, ...]
    short: str  # the table cell's text
    note: str | None = None


OK = Ok()

TECHNIQUES = {
    "prune": "GradualPruning unstructured",
    "prune_2of4": "GradualPruning 2:4",
    "channel_shrink": "channel pruning + shrink_model",
    "qat_int8": "quantize_model + int8 export",
    "binarize": "binarize_model",
    "factorize": "factorize_model",
    "cluster_pack": "cluster_model + pack",
    "distill": "DistillationTeacher",
}
ARCH_TITLES = {
    "mobilenet_v2_blocks": "MobileNetV2-style blocks (BN, ReLU6, depthwise, residual add)",
    "mobilenet_v2": "keras.applications.MobileNetV2 (alpha 0.35, 32x32) [full run only]",
    "resnet": "ResNet-style blocks (BN, residual adds)",
    "transformer": "Transformer encoder (MHA, EinsumDense, LayerNorm)",
    "lstm": "LSTM text classifier",
    "gru": "GRU text classifier [full run only]",
    "nested": "Model nested in a model",
    "subclassed": "Subclassed keras.Model",
}

_SUBCLASS_TRANSFORM = Refused(
    TypeError,
    ("is a subclassed SubclassedCNN", "Sequential and Functional", "by hand"),
    "TypeError: subclassed model",
    "Model transforms rebuild Sequential/Functional graphs (nested ones included). In a "
    "subclassed model, use the tfcompress layers (QuantConv2D, BinaryDense, LowRankDense, "
    "ClusteredDense, ...) in its `__init__` directly. Callbacks work on it, and export needs "
    "`input_signature=[tf.TensorSpec(...)]`.",
)

EXPECTED: dict[tuple[str, str], Ok | Refused] = {
    (technique, arch): OK for technique in TECHNIQUES for arch in archs.ARCHITECTURES
}
_NO_BINARY_LAYER = (
    "binarize_model converts Dense, Conv2D and DepthwiseConv2D only (not Embedding, attention, "
    "EinsumDense or recurrent layers), and keeps the first and last of them float by default, "
    "which leaves nothing here; `keep_first=False` binarizes the hidden Dense."
)
_TEXT_CHANNELS = (
    "Embedding tables have no output channels, so the cell selects the other layers "
    "(`layers=lambda l: not isinstance(l, keras.layers.Embedding)`); without that the callback "
    "refuses at the start of `fit` naming the Embedding. Attention and recurrent layers are "
    "channel-pruned but not shrunk (shrink_model keeps channels that enter layers which mix "
    "channels in ways it does not model)."
)
_NOTHING_TO_SHRINK = (
    "In this encoder every pruned channel enters attention, an EinsumDense, a residual add or "
    "the output, so shrink_model removes nothing (outputs unchanged)."
)
_FLOAT_ISLANDS = (
    "Dense/Conv layers run int8; layers with no int8 rule (attention, LayerNormalization, "
    "recurrent, custom) stay float in the file (listed by `quantize_model(..., return_log=True)`)."
)
EXPECTED.update(
    {
        ("binarize", "transformer"): Refused(
            ValueError,
            ("leaves no layer", "ffn_down (Dense), logits (Dense)", "keep_first=False"),
            "ValueError: no binarizable layer left",
            _NO_BINARY_LAYER,
        ),
        ("binarize", "lstm"): Refused(
            ValueError,
            ("leaves no layer", "hidden (Dense), logits (Dense)", "keep_first=False"),
            "ValueError: no binarizable layer left",
            _NO_BINARY_LAYER,
        ),
        ("binarize", "gru"): Refused(
            ValueError,
            ("leaves no layer", "hidden (Dense), logits (Dense)", "keep_first=False"),
            "ValueError: no binarizable layer left",
            _NO_BINARY_LAYER,
        ),
        ("cluster_pack", "transformer"): Refused(
            ValueError,
            ("layer 'positions'", "PositionEmbedding", "keras and tfcompress classes only"),
            "ValueError at pack: custom layer class",
            "`pack` stores models built from Keras and tfcompress classes only (`unpack` refuses "
            "other modules for safety); the custom PositionEmbedding layer is refused before "
            "anything is written. Clustering itself works; save such a model with `model.save`.",
        ),
        ("channel_shrink", "transformer"): Ok((_TEXT_CHANNELS, _NOTHING_TO_SHRINK), smaller=False),
        ("channel_shrink", "lstm"): Ok(_TEXT_CHANNELS),
        ("channel_shrink", "gru"): Ok(_TEXT_CHANNELS),
        ("qat_int8", "transformer"): Ok(_FLOAT_ISLANDS),
        ("qat_int8", "lstm"): Ok(_FLOAT_ISLANDS),
        ("qat_int8", "gru"): Ok(_FLOAT_ISLANDS),
        ("channel_shrink", "nested"): Refused(
            ValueError,
            ("does not descend into nested model 'features'",),
            "ValueError: nested model",
            "shrink_model does not enter nested models; build the model flat to shrink it. "
            "Channel pruning itself works on nested models.",
        ),
        ("channel_shrink", "subclassed"): Refused(
            ValueError,
            ("shrink_model needs a Sequential or Functional model", "'subclassed'"),
            "ValueError: shrink_model needs a graph",
            "shrink_model rewrites the layer graph, which a subclassed model does not expose; "
            "the pruned model itself trains, exports and keeps its zeros.",
        ),
        ("qat_int8", "subclassed"): _SUBCLASS_TRANSFORM,
        ("binarize", "subclassed"): _SUBCLASS_TRANSFORM,
        ("factorize", "subclassed"): _SUBCLASS_TRANSFORM,
        ("cluster_pack", "subclassed"): _SUBCLASS_TRANSFORM,
    }
)

# ---------------------------------------------------------------- tolerances
# Float files (pruned, shrunk, binary, low-rank, clustered, distilled) compute
# what Keras computes up to float32 rounding: FLOAT_TOL times the logits'
# largest magnitude (at least 1). int8 files agree with the fake-quantized Keras
# model up to rounding at each quantized tensor: INT8_TOL of the logit range,
# and the same top-1 class on INT8_TOP1 of the examples.
FLOAT_TOL = 1e-4
INT8_TOL = 0.15
INT8_TOP1 = 0.85
SHRINK_TOL = 1e-5
STEPS_PER_EPOCH = 4
BATCH = 16


# ---------------------------------------------------------------- helpers


def _compile(model: keras.Model) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def _fit(model, data, callbacks=(), epochs=1):
    x, y = data
    _compile(model)
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=list(callbacks))


def _signature(arch: str, model: keras.Model):
    """Only a subclassed model needs its input spelled out for export."""
    if getattr(model, "inputs", None):
        return None
    import tensorflow as tf

    spec = archs.ARCHITECTURES[arch]
    dtype = "int32" if spec.text else "float32"
    return [tf.TensorSpec((None, *spec.input_shape), dtype)]


def _export(model, arch, data, tmp_path, quantization=None, sparsity=False):
    report = tfc.tflite_export.export(
        model,
        tmp_path / "model.tflite",
        quantization=quantization,
        verify_data=data[0],
        input_signature=_signature(arch, model),
        verbose=0,
        sparsity=sparsity,
    )
    assert report.verified and report.verify_samples == len(data[0])
    return report


def _assert_float_agreement(model, arch, data, tmp_path, sparsity=False):
    report = _export(model, arch, data, tmp_path, sparsity=sparsity)
    scale = max(1.0, float(np.abs(model.predict(data[0], verbose=0)).max()))
    assert report.max_abs_diff <= FLOAT_TOL * scale, report
    assert report.top1_agreement == 1.0, report
    return report


def _snapshot(model: keras.Model):
    return (
        [(layer.name, type(layer).__name__) for layer in model._flatten_layers(include_self=False)],
        [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights],
    )


def _pruned(model):
    return [w for w in find_prunable(model)]


def _array(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable))


# ---------------------------------------------------------------- techniques


def _not_embedding(layer) -> bool:
    return not isinstance(layer, keras.layers.Embedding)


def run_prune(arch, model, data, tmp_path):
    pruning = tfc.callbacks.GradualPruning(0.5, begin_step=0, end_step=2, frequency=1)
    _fit(model, data, [pruning])
    for weight in _pruned(model):
        value = _array(weight.variable)
        sparsity = float(np.mean(value == 0))
        # Per-layer scope: each weight reaches the target up to one element.
        assert abs(sparsity - 0.5) <= 1.0 / value.size + 1e-9, (weight.name, sparsity)
    # The pruning export path: TFLite's sparse encoding where it makes the file smaller.
    report = _assert_float_agreement(model, arch, data, tmp_path, sparsity="auto")
    # Zeros reach the file (unpruned tensors such as biases and recurrent kernels dilute them).
    assert report.weight_sparsity >= 0.2, report


def run_prune_2of4(arch, model, data, tmp_path):
    pruning = tfc.callbacks.GradualPruning(
        None, granularity="2:4", begin_step=0, end_step=2, frequency=1
    )
    _fit(model, data, [pruning])
    groups_checked = 0
    for weight in _pruned(model):
        view = matrix_view(_array(weight.variable), weight.channel_axes)
        k = view.shape[0]
        padded = np.pad(view != 0, ((0, -k % 4), (0, 0)))
        counts = padded.reshape(-1, 4, view.shape[1]).sum(axis=1)
        sizes = np.minimum(4, k - 4 * np.arange(counts.shape[0]))[:, None]
        # Exactly 2 non-zeros in every full group of 4 along the input dimension.
        assert np.array_equal(counts, np.minimum(2, sizes) * np.ones_like(counts)), weight.name
        groups_checked += counts.size
    assert groups_checked > 0
    _assert_float_agreement(model, arch, data, tmp_path)


def run_channel_shrink(arch, model, data, tmp_path):
    pruning = tfc.callbacks.GradualPruning(
        0.5, granularity="channel", begin_step=0, end_step=2, frequency=1, layers=_not_embedding
    )
    _fit(model, data, [pruning])
    for weight in _pruned(model):
        if not _not_embedding(weight.layer):
            continue
        view = matrix_view(_array(weight.variable), weight.channel_axes)
        dead = float(np.mean(np.all(view == 0, axis=0)))
        assert abs(dead - 0.5) <= 1.0 / view.shape[1] + 1e-9, (weight.name, dead)
    before = _snapshot(model)
    try:
        small = tfc.shrink_model(model)
    except Exception:
        after = _snapshot(model)
        assert before[0] == after[0]
        assert all(np.array_equal(a, b) for a, b in zip(before[1], after[1]))
        raise
    x = data[0]
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(small.predict(x, verbose=0), expected, atol=SHRINK_TOL, rtol=0)
    if EXPECTED[("channel_shrink", arch)].smaller:
        assert small.count_params() < model.count_params()
    else:
        assert small.count_params() == model.count_params()
    _assert_float_agreement(small, arch, data, tmp_path)


def run_qat_int8(arch, model, data, tmp_path):
    qat = tfc.quantize_model(model)
    _fit(qat, data)
    report = _export(qat, arch, data, tmp_path, quantization="int8")
    logits = qat.predict(data[0], verbose=0)
    span = float(logits.max() - logits.min()) or 1.0
    assert report.max_abs_diff <= INT8_TOL * span, report
    assert report.top1_agreement >= INT8_TOP1, report
    int8_ops = sum(n for op, n in report.op_counts.items() if "int8" in op)
    assert int8_ops > 0, report.op_counts


def run_binarize(arch, model, data, tmp_path):
    binary = tfc.binarize_model(model)
    _fit(binary, data)
    converted = [
        layer
        for layer in binary._flatten_layers(include_self=False)
        if hasattr(layer, "binary_kernel")
    ]
    assert converted
    for layer in converted:
        values, scales = layer.binary_kernel()
        assert set(np.unique(values)) <= {-1, 1}
        np.testing.assert_allclose(values * scales, layer.quantized_kernel(), rtol=0, atol=0)
    _assert_float_agreement(binary, arch, data, tmp_path)


def run_factorize(arch, model, data, tmp_path):
    small, report = tfc.factorize_model(model, rank=4, return_report=True, verbose=0)
    assert report.factorized and all(f.rank == 4 for f in report.factorized)
    assert report.params_after < report.params_before
    _fit(small, data)
    _assert_float_agreement(small, arch, data, tmp_path)


def run_cluster_pack(arch, model, data, tmp_path):
    clustered = tfc.cluster_model(model, clusters=8)
    _fit(clustered, data)
    layers = [
        layer
        for layer in clustered._flatten_layers(include_self=False)
        if hasattr(layer, "set_clusters")
    ]
    assert layers
    for layer in layers:
        assert len(np.unique(_array(layer.kernel))) <= 8, layer.name
    report = tfc.pack(clustered, tmp_path / "model.tfcp")
    float_bytes = sum(4 * math.prod(w.shape) for w in model.weights)
    assert sum(tensor[3] for tensor in report.tensors) < float_bytes
    restored = tfc.unpack(tmp_path / "model.tfcp")
    x = data[0]
    np.testing.assert_array_equal(restored.predict(x, verbose=0), clustered.predict(x, verbose=0))
    _assert_float_agreement(clustered, arch, data, tmp_path)


def _kl(teacher_logits, student_logits) -> float:
    p = keras.ops.convert_to_numpy(keras.ops.softmax(teacher_logits))
    log_q = keras.ops.convert_to_numpy(keras.ops.log_softmax(student_logits))
    return float(np.mean(np.sum(p * (np.log(np.maximum(p, 1e-12)) - log_q), axis=-1)))


def run_distill(arch, model, data, tmp_path):
    teacher = archs.build(arch, seed=1)
    x = data[0]
    teacher_logits = teacher.predict(x, verbose=0)
    before = _kl(teacher_logits, model(x, training=True))
    # alpha=1: the teacher's term is the whole loss, so training must move toward it.
    _fit(model, data, [tfc.callbacks.DistillationTeacher(teacher, temperature=1.0, alpha=1.0)])
    after = _kl(teacher_logits, model(x, training=True))
    assert after < before, (before, after)
    _assert_float_agreement(model, arch, data, tmp_path)


RUNNERS = {
    "prune": run_prune,
    "prune_2of4": run_prune_2of4,
    "channel_shrink": run_channel_shrink,
    "qat_int8": run_qat_int8,
    "binarize": run_binarize,
    "factorize": run_factorize,
    "cluster_pack": run_cluster_pack,
    "distill": run_distill,
}


# ---------------------------------------------------------------- the matrix


def run_cell(technique: str, arch: str, tmp_path: Path) -> None:
    """Runs one cell and asserts what EXPECTED says about it."""
    model = archs.build(arch)
    data = archs.make_data(arch)
    expected = EXPECTED[(technique, arch)]
    if isinstance(expected, Ok):
        RUNNERS[technique](arch, model, data, tmp_path)
        return
    if technique in ("prune", "prune_2of4", "channel_shrink", "distill"):
        # Training-time techniques: the refusal comes after the user's own fit.
        with pytest.raises(expected.error) as caught:
            RUNNERS[technique](arch, model, data, tmp_path)
    else:
        before = _snapshot(model)
        with pytest.raises(expected.error) as caught:
            RUNNERS[technique](arch, model, data, tmp_path)
        after = _snapshot(model)
        assert before[0] == after[0]
        assert all(np.array_equal(a, b) for a, b in zip(before[1], after[1]))
    message = str(caught.value)
    for fragment in expected.fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# The full keras.applications MobileNetV2 costs ~80 s of CPU per cell (graph
# tracing and conversion of its ~150 layers), about 10 minutes for its row: CI
# runs the MobileNetV2-style row, TFCOMPRESS_FULL_MATRIX=1 runs this one too.
# The GRU row repeats the LSTM row's code paths; it runs in the full matrix.
FULL_ONLY = {"mobilenet_v2", "gru"}
_FULL_RUN = os.environ.get("TFCOMPRESS_FULL_MATRIX") == "1"


@pytest.mark.parametrize(
    ("technique", "arch"),
    [
        pytest.param(
            t,
            a,
            marks=pytest.mark.skipif(
                a in FULL_ONLY and not _FULL_RUN, reason="full matrix: TFCOMPRESS_FULL_MATRIX=1"
            ),
        )
        for t, a in EXPECTED
    ],
    ids=[f"{t}-{a}" for t, a in EXPECTED],
)
def test_cell(technique, arch, tmp_path):
    run_cell(technique, arch, tmp_path)


# ---------------------------------------------------------------- the table


def markdown_table() -> str:
    """The README table generated from EXPECTED (cells, then footnotes)."""
    notes: list[str] = []

    def cell(value: Ok | Refused) -> str:
        text = value.short if isinstance(value, Refused) else "ok"
        if value.note is None:
            return text
        own = (value.note,) if isinstance(value.note, str) else value.note
        for note in own:
            if note not in notes:
                notes.append(note)
        return f"{text} [{', '.join(str(notes.index(n) + 1) for n in own)}]"

    header = "| architecture | " + " | ".join(TECHNIQUES.values()) + " |"
    rule = "|---|" + "---|" * len(TECHNIQUES)
    rows = [
        f"| {title} | " + " | ".join(cell(EXPECTED[(t, arch)]) for t in TECHNIQUES) + " |"
        for arch, title in ARCH_TITLES.items()
    ]
    lines = [header, rule, *rows]
    if notes:
        lines.append("")
        lines += [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


def test_expected_covers_every_cell():
    assert set(EXPECTED) == {(t, a) for t in TECHNIQUES for a in archs.ARCHITECTURES}
    assert set(ARCH_TITLES) == set(archs.ARCHITECTURES)


TABLE_BEGIN = "<!-- support-table:begin"
TABLE_END = "<!-- support-table:end -->"


def generated_region(text: str, begin: str = TABLE_BEGIN, end: str = TABLE_END) -> str:
    """The text between the ``begin`` marker's line and the ``end`` marker (exactly one pair)."""
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(
            f"expected one {begin!r} ... {end!r} pair, found {text.count(begin)} and "
            f"{text.count(end)}"
        )
    start = text.index("\n", text.index(begin)) + 1
    return text[start : text.index(end)]


def test_generated_region_is_exact():
    text = "x\n<!-- support-table:begin (generated) -->\n| a |\n[1] n\n<!-- support-table:end -->\n"
    assert generated_region(text) == "| a |\n[1] n\n"
    with pytest.raises(ValueError, match="found 2 and 1"):
        generated_region(text.replace("x\n", "<!-- support-table:begin -->\n"))


def test_readme_table_is_current():
    readme = DOC.parent.parent / "README.md"
    assert generated_region(readme.read_text()) == markdown_table(), (
        "README.md's support table (between the support-table markers) is not the one "
        "generated from EXPECTED; regenerate it with "
        "`PYTHONPATH=. python tests/test_support_matrix.py --print-table` and paste the "
        "output between the markers"
    )


def test_support_doc_does_not_copy_the_table():
    # The README holds the one generated copy; docs/support.md links to it.
    assert markdown_table().splitlines()[0] not in DOC.read_text()


if __name__ == "__main__":
    if "--print-table" in sys.argv:
        print(markdown_table(), end="")
    else:
        print(__doc__)

"""``tfc.oneshot.prune``, ``quantize`` and ``compress``: post-training, from calibration data.

Each entry point checks every argument, then hands a
:class:`~tfcompress.oneshot.engine.Settings` to :func:`~tfcompress.oneshot.engine.run`.
The user's model is never modified: the result is a copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from tfcompress.core.walk import LayerSelection, walk_layers
from tfcompress.oneshot.engine import Settings, run
from tfcompress.oneshot.grid import GridSpec
from tfcompress.oneshot.report import OneShotReport
from tfcompress.oneshot.validation import (
    check_bits,
    check_choice,
    check_damping,
    check_group_size,
    parse_pattern,
    resolve_sparsity,
)
from tfcompress.pruning.validation import check_int

__all__ = ["COMPRESS_METHODS", "PRUNE_METHODS", "QUANTIZE_METHODS", "compress", "prune", "quantize"]

PRUNE_METHODS = ("sparsegpt", "obs", "magnitude", "mfac")
QUANTIZE_METHODS = ("gptq", "rtn")
COMPRESS_METHODS = ("sparsegpt", "magnitude")


def _check_model(model: Any) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built; build it (keras.Input or a call on data) first"
        )


def _common(
    damping: Any, block_size: Any, batch_size: Any, max_samples: Any, verbose: Any
) -> dict[str, Any]:
    return {
        "damping": check_damping(damping),
        "block_size": check_int("block_size", block_size, minimum=1),
        "batch_size": check_int("batch_size", batch_size, minimum=1),
        "max_samples": check_int("max_samples", max_samples, minimum=1, none_ok=True),
        "verbose": check_int("verbose", verbose, minimum=0),
    }


def _finish(model: keras.Model, report: OneShotReport, return_report: bool):
    return (model, report) if return_report else model


def prune(
    model: keras.Model,
    calibration_data: Any,
    sparsity: float | None = None,
    pattern: str = "unstructured",
    method: str = "sparsegpt",
    layers: LayerSelection = None,
    *,
    damping: float = 0.01,
    block_size: int = 128,
    batch_size: int = 32,
    max_samples: int | None = None,
    verbose: int = 1,
    return_report: bool = False,
    **method_kwargs: Any,
) -> keras.Model | tuple[keras.Model, OneShotReport]:
    """Prunes a trained model in one shot from calibration data, without retraining.

    Layers are pruned one after the other in the order the model calls them.
    Each sees its inputs as they arrive through the layers pruned before it,
    accumulates ``H = 2 X X^T / n`` over the calibration batches, and solves
    for the mask and the weights of the kept inputs that best reproduce its
    original output ``W X`` (see ``docs/oneshot.md``):

    * ``"sparsegpt"``: column-by-column OBS updates with the inverse-Hessian
      Cholesky factor, masks chosen adaptively per block of 128 columns
      (or per N:M group); fast, any width;
    * ``"obs"``: exact greedy Optimal Brain Surgeon per row with inverse
      downdates (OBC), sparsity allocated across rows; cost ``R C^3``, for
      small layers;
    * ``"magnitude"``: the one-shot magnitude baseline (same pattern, no
      weight update);
    * ``"mfac"``: global pruning with M-FAC inverse-Fisher estimates
      (:func:`tfcompress.oneshot.mfac.mfac_prune`; its own options go in
      ``method_kwargs``).

    The result is a copy with the user's own layers (same classes and names);
    each pruned kernel carries a ``PruningMask`` constraint as after
    ``GradualPruning``, so a later fine-tune keeps the zeros and ``.keras``
    files keep the masks. Export it with ``tfc.tflite_export.export(pruned,
    path, quantization="int8", representative_data=...)``.

    Args:
        model: A trained, built Sequential or Functional Keras model (nested
            models are entered). It is not modified.
        calibration_data: A few hundred typical inputs: an array, a list/dict of
            arrays, a ``tf.data.Dataset`` or an iterable of batches (labels are
            ignored), checked against the model's input shapes.
        sparsity: Fraction of each layer's weights to prune, in [0, 1).
            Default 0.5 (unstructured) or ``1 - N/M`` (N:M); with N:M it must
            equal ``1 - N/M``.
        pattern: ``"unstructured"`` or ``"N:M"`` (keep N of every M
            consecutive inputs of each output, e.g. ``"2:4"``).
        method: ``"sparsegpt"``, ``"obs"``, ``"magnitude"`` or ``"mfac"``.
        layers: Which layers (names, class names, classes or a predicate;
            ``"MultiHeadAttention"`` selects its projections). Default: every
            layer with a rule (Dense, Conv1D, Conv2D, DepthwiseConv2D,
            EinsumDense, MultiHeadAttention); the call fails if the model has
            other layers with kernels, listing them.
        damping: Dampening added to the Hessian's diagonal, as a fraction of
            its mean (escalated x10 with a logged message when Cholesky fails).
        block_size: Columns per lazy-update block (SparseGPT).
        batch_size: Calibration examples per forward pass.
        max_samples: Read at most this many calibration examples.
        verbose: 1 shows a progress bar over layers, 0 nothing.
        return_report: Also return a :class:`~tfcompress.oneshot.OneShotReport`.
        **method_kwargs: Options of ``method="mfac"`` only.

    Returns:
        The pruned copy, or ``(copy, report)`` with ``return_report=True``.

    Raises:
        ValueError: Missing or empty calibration data, or data whose shapes do
            not match the model's inputs; ``sparsity`` outside [0, 1); a
            malformed N:M pattern; an unknown method; a selected layer (or,
            with ``layers=None``, any layer with a kernel) without a rule. All
            are raised before anything is copied or changed.
        TypeError: ``model`` is not a Keras model, or a subclassed one.

    Example:
        >>> pruned, report = tfc.oneshot.prune(model, x_train[:256], sparsity=0.5,
        ...                                    return_report=True)
        >>> print(report)

    References:
        Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be
        Accurately Pruned in One-Shot", ICML 2023. Frantar & Alistarh, "Optimal
        Brain Compression", NeurIPS 2022.
    """
    _check_model(model)
    method = check_choice("method", method, PRUNE_METHODS)
    nm = parse_pattern(pattern)
    sparsity = resolve_sparsity(sparsity, nm)
    common = _common(damping, block_size, batch_size, max_samples, verbose)
    if method == "mfac":
        return _mfac(model, calibration_data, sparsity, nm, layers, return_report, method_kwargs)
    if method_kwargs:
        raise TypeError(
            f"prune() got unexpected keyword arguments {sorted(method_kwargs)} "
            f"(extra options are for method='mfac' only)"
        )
    settings = Settings("prune", method, sparsity=sparsity, pattern=nm, **common)
    result, report = run(model, calibration_data, settings, layers)
    return _finish(result, report, return_report)


def _mfac(model, data, sparsity, nm, layers, return_report, options):
    if nm is not None:
        raise ValueError(
            f"method='mfac' prunes unstructured (global); pattern='{nm}' is not supported with it"
        )
    from tfcompress.oneshot.mfac import mfac_prune

    result = mfac_prune(model, data, sparsity=sparsity, layers=layers, **options)
    if not return_report:
        return result
    report = OneShotReport("prune", "mfac", "unstructured", sparsity, None)
    report.notes.append("method='mfac' reports no per-layer reconstruction errors")
    return result, report


def quantize(
    model: keras.Model,
    calibration_data: Any,
    bits: int | Mapping[str, int] = 4,
    method: str = "gptq",
    group_size: int | None = None,
    per_channel: bool = True,
    layers: LayerSelection = None,
    *,
    activations: bool = True,
    damping: float = 0.01,
    block_size: int = 128,
    batch_size: int = 32,
    max_samples: int | None = None,
    verbose: int = 1,
    return_report: bool = False,
) -> keras.Model | tuple[keras.Model, OneShotReport]:
    """Quantizes a trained model's weights in one shot from calibration data (GPTQ).

    Layers are quantized in call order from inputs that flow through the
    layers quantized before them. ``"gptq"`` rounds one column at a time and
    moves each column's rounding error onto the columns not yet rounded with
    the inverse-Hessian Cholesky factor (lazy block updates); ``"rtn"`` rounds
    every weight to nearest (the baseline). The grid is symmetric with zero
    point 0 (``[-7, 7] * s`` for 4 bits), as TFLite stores int8 weights.

    The result is :func:`tfcompress.quantize_model`'s copy of the model:
    Dense/Conv1D/Conv2D/DepthwiseConv2D become ``Quant*`` layers whose
    LSQ kernel quantizer holds the grid step, so Keras computes with exactly
    the GPTQ integers times their step, and input/output ranges calibrated on
    the calibration data. ``tfc.tflite_export.export(quant, path,
    quantization="int8")`` then needs no representative data and writes
    those integers. Layers without a ``Quant*`` class (EinsumDense, the
    attention projections) and any layer when ``group_size`` is set keep
    float kernels whose values lie on the grid (the report says which).

    Args:
        model: A trained, built Sequential or Functional model. Not modified.
        calibration_data: Typical inputs (see :func:`prune`).
        bits: Weight bits, 2 to 8; or ``{layer name: bits}`` for mixed
            precision (what ``tfc.allocate.bits`` chooses): those layers are
            quantized, each to its own bits, and ``layers`` must be None.
        method: ``"gptq"`` or ``"rtn"``.
        group_size: Columns sharing one step within a row (e.g. 128), or
            None for one step per output channel (or tensor).
        per_channel: One step per output channel (else per tensor). The
            TFLite converter takes per-tensor ranges only on Dense
            (FULLY_CONNECTED) weights: pass False for an int8 file of a model
            with Dense layers.
        layers: Which layers (see :func:`prune`).
        activations: Give the model int8 input/output ranges, calibrated on
            the calibration data, for a full-integer TFLite file. False:
            weight-only fake quantization (what the weights alone cost in
            accuracy; export it as float or ``"dynamic"``).
        damping: Relative Hessian dampening (see :func:`prune`).
        block_size: Columns per lazy-update block.
        batch_size: Calibration examples per forward pass.
        max_samples: Read at most this many calibration examples.
        verbose: 1 shows a progress bar over layers.
        return_report: Also return the :class:`~tfcompress.oneshot.OneShotReport`.

    Returns:
        The quantized copy, or ``(copy, report)``.

    Raises:
        ValueError: Bad calibration data; ``bits`` outside 2..8; an unknown
            method; a bad ``group_size``; layers without a rule (see
            :func:`prune`). All before anything is copied or changed.
        TypeError: ``model`` is not a Keras model, or a subclassed one.

    Example:
        >>> quant = tfc.oneshot.quantize(model, x_train[:256], bits=4, per_channel=False)
        >>> tfc.tflite_export.export(quant, "model_int4.tflite", quantization="int8")

    References:
        Frantar, Ashkboos, Hoefler & Alistarh, "GPTQ: Accurate Post-Training
        Quantization for Generative Pre-trained Transformers", ICLR 2023.
    """
    _check_model(model)
    method = check_choice("method", method, QUANTIZE_METHODS)
    layer_bits: tuple[tuple[str, int], ...] = ()
    if isinstance(bits, Mapping):
        layer_bits, layers = _layer_bits(model, bits, layers)
        bits = max(b for _, b in layer_bits)
    grid = _grid(bits, group_size, per_channel)
    common = _common(damping, block_size, batch_size, max_samples, verbose)
    if not isinstance(activations, bool):
        raise ValueError(f"activations must be True or False, got {activations!r}")
    settings = Settings(
        "quantize", method, grid=grid, layer_bits=layer_bits, activations=activations, **common
    )
    result, report = run(model, calibration_data, settings, layers)
    return _finish(result, report, return_report)


def _layer_bits(model: keras.Model, bits: Mapping, layers: Any):
    """``bits={path: bits}``: checked pairs and a selection of exactly those layers."""
    if layers is not None:
        raise ValueError(
            f"layers={layers!r} was given with bits as a mapping; the mapping's keys are the "
            "layers to quantize, so pass layers=None"
        )
    if not bits:
        raise ValueError("bits is an empty mapping; expected {layer name: bits} with 1+ layers")
    paths = dict(walk_layers(model, sublayers=True, models=True))
    pairs = []
    for name, value in bits.items():
        if not isinstance(name, str) or name not in paths:
            raise ValueError(
                f"bits has the key {name!r}, which names no layer of model {model.name!r}; "
                f"keys are layer paths such as {list(paths)[:4]}"
            )
        try:
            pairs.append((name, check_bits(value)))
        except ValueError as error:
            raise ValueError(f"bits[{name!r}]: {error}") from None
    chosen = {id(paths[name]) for name, _ in pairs}
    return tuple(pairs), lambda layer: id(layer) in chosen


def _grid(bits: Any, group_size: Any, per_channel: Any) -> GridSpec:
    if not isinstance(per_channel, bool):
        raise ValueError(f"per_channel must be True or False, got {per_channel!r}")
    return GridSpec(check_bits(bits), per_channel, check_group_size(group_size))


def compress(
    model: keras.Model,
    calibration_data: Any,
    sparsity: float | None = None,
    bits: int = 4,
    pattern: str = "unstructured",
    method: str = "sparsegpt",
    group_size: int | None = None,
    per_channel: bool = True,
    layers: LayerSelection = None,
    *,
    activations: bool = True,
    damping: float = 0.01,
    block_size: int = 128,
    batch_size: int = 32,
    max_samples: int | None = None,
    verbose: int = 1,
    return_report: bool = False,
) -> keras.Model | tuple[keras.Model, OneShotReport]:
    """Prunes and quantizes in one pass per layer (joint OBC / SparseGPT order).

    In each column of the sweep the mask is applied first and the kept
    weights are then rounded to the grid; the error of both is moved onto the
    columns not yet visited, so later columns compensate for pruning and
    rounding together. ``method="magnitude"`` is the baseline: magnitude mask,
    then round-to-nearest. The result carries both a ``PruningMask`` and the
    grid (see :func:`quantize`).

    Args:
        model: A trained, built Sequential or Functional model. Not modified.
        calibration_data: Typical inputs (see :func:`prune`).
        sparsity: See :func:`prune` (default 0.5, or ``1 - N/M``).
        bits: Weight bits, 2 to 8.
        pattern: ``"unstructured"`` or ``"N:M"``.
        method: ``"sparsegpt"`` (joint) or ``"magnitude"`` (magnitude + RTN).
        group_size: See :func:`quantize`.
        per_channel: See :func:`quantize`.
        layers: See :func:`prune`.
        activations: See :func:`quantize`.
        damping: Relative Hessian dampening.
        block_size: Columns per lazy-update block.
        batch_size: Calibration examples per forward pass.
        max_samples: Read at most this many calibration examples.
        verbose: 1 shows a progress bar over layers.
        return_report: Also return the :class:`~tfcompress.oneshot.OneShotReport`.

    Returns:
        The compressed copy, or ``(copy, report)``.

    Raises:
        ValueError: Any error of :func:`prune` or :func:`quantize`.
        TypeError: ``model`` is not a Keras model, or a subclassed one.

    Example:
        >>> both = tfc.oneshot.compress(model, x_train[:256], sparsity=0.5, bits=4)

    References:
        Frantar & Alistarh, "Optimal Brain Compression", NeurIPS 2022;
        "SparseGPT", ICML 2023 (joint sparsification and quantization).
    """
    _check_model(model)
    method = check_choice("method", method, COMPRESS_METHODS)
    nm = parse_pattern(pattern)
    sparsity = resolve_sparsity(sparsity, nm)
    grid = _grid(bits, group_size, per_channel)
    common = _common(damping, block_size, batch_size, max_samples, verbose)
    if not isinstance(activations, bool):
        raise ValueError(f"activations must be True or False, got {activations!r}")
    settings = Settings(
        "compress",
        method,
        sparsity=sparsity,
        pattern=nm,
        grid=grid,
        activations=activations,
        **common,
    )
    result, report = run(model, calibration_data, settings, layers)
    return _finish(result, report, return_report)

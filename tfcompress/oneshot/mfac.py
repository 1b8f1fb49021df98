"""``mfac_prune``: global one-shot pruning with M-FAC's inverse Fisher and WoodFisher's update.

No retraining: from ``m`` loss gradients on labelled calibration data, the
damped empirical Fisher ``F = lambda * I + G^T G / m`` of the selected weights
(block-diagonal, blocks inside each weight) is inverted matrix-free
(:class:`tfcompress.core.fisher.InverseFisher`). Every weight gets the
Optimal Brain Surgeon saliency ``rho_q = w_q^2 / (2 [F^-1]_qq)``; the lowest
``sparsity`` fraction over all selected weights is removed and the others
compensate by WoodFisher's update ``dw = -sum_q w_q F^-1 e_q / [F^-1]_qq``.
With ``steps > 1`` the sparsity is reached in equal steps, the gradients
recomputed on the pruned model between them (WoodFisher's multi-step pruning).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import keras
import numpy as np

from tfcompress.core.calibration import calibration_data as read_inputs
from tfcompress.core.fisher import InverseFisher, relative_damping
from tfcompress.core.gradients import loss_gradients
from tfcompress.core.rewrite import rewrite_model
from tfcompress.pruning.constraint import PruningMask, attach_mask
from tfcompress.pruning.masks import validate_sparsity
from tfcompress.pruning.prunable import LayerSelector, PrunableWeight, find_prunable

__all__ = ["mfac_prune"]


def _positive_int(name: str, value: Any, none_ok: bool = False) -> int | None:
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        expected = "a positive integer or None" if none_ok else "a positive integer"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def _resolve_loss(model: keras.Model, loss: Any) -> Callable[[Any, Any], Any]:
    """``loss`` as a callable, or the model's compiled loss; a clear error without one."""
    if loss is None:
        compiled = getattr(model, "loss", None) if getattr(model, "compiled", False) else None
        if compiled is None:
            raise ValueError(
                "mfac_prune needs a loss to take gradients of: pass loss=, e.g. "
                "keras.losses.SparseCategoricalCrossentropy(from_logits=True), or compile "
                f"model {model.name!r} with one"
            )
        if isinstance(compiled, (dict, list, tuple)):
            raise ValueError(
                f"model {model.name!r} is compiled with one loss per output "
                f"({type(compiled).__name__}); pass loss=, one callable "
                "loss(y_true, y_pred) -> scalar"
            )
        loss = compiled
    if isinstance(loss, (str, dict)):
        try:
            return keras.losses.get(loss)
        except ValueError as error:
            raise ValueError(f"loss={loss!r} is not a known Keras loss: {error}") from error
    if not callable(loss):
        raise ValueError(
            f"loss must be a callable loss(y_true, y_pred), a Keras loss name or None, got "
            f"{type(loss).__name__}"
        )
    return loss


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, type)


def _labelled_data(data: Any, model: keras.Model, limit: int) -> tuple[Any, np.ndarray, int]:
    """``(x in the model's input structure, y, examples)``, at most ``limit`` examples.

    Accepts ``(x, y)`` (x as any calibration input form, y one array), or a
    ``tf.data.Dataset``/iterable of ``(x, y)`` or ``(x, y, sample_weight)`` batches.
    """
    argument = "calibration_data"
    if data is None:
        raise ValueError(f"{argument} is None: give (x, y), inputs and their targets")
    if isinstance(data, (tuple, list)) and len(data) == 2 and _is_array(data[1]):
        x, y = data[0], np.asarray(data[1])
    elif isinstance(data, (str, bytes)) or _is_array(data) or isinstance(data, dict):
        raise ValueError(
            f"{argument} must be labelled: a pair (x, y) or batches of (x, y), got "
            f"{type(data).__name__}; mfac_prune takes gradients of the loss, which needs "
            "targets (for a language model, the next tokens)"
        )
    elif isinstance(data, Iterable):
        xs, ys, seen = [], [], 0
        for index, element in enumerate(data):
            if not (isinstance(element, (tuple, list)) and len(element) in (2, 3)):
                raise ValueError(
                    f"{argument} batch {index} is a {type(element).__name__}; each batch must "
                    "be (x, y) or (x, y, sample_weight)"
                )
            xs.append(element[0])
            ys.append(np.asarray(element[1]))
            seen += len(ys[-1])
            if seen >= limit:
                break
        if not ys:
            raise ValueError(f"{argument} is empty: give at least one (x, y) example")
        x, y = xs, np.concatenate(ys)
    else:
        raise ValueError(
            f"{argument} must be a pair (x, y) or an iterable of (x, y) batches, got "
            f"{type(data).__name__}"
        )
    if y.ndim == 0 or len(y) == 0:
        raise ValueError(f"{argument} is empty: give at least one (x, y) example")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"{argument}: the targets y have dtype {y.dtype}; numbers expected")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"{argument}: the targets y hold NaN/Inf values")
    inputs = read_inputs(x, model, max_samples=limit, argument=f"{argument} (x)")
    y = y[:limit]
    if inputs.num_samples != len(y):
        raise ValueError(
            f"{argument}: x has {inputs.num_samples} examples but y has {len(y)} (of the "
            f"first {limit} read); give one target per example"
        )
    return inputs.inputs(), y, len(y)


def _batch(x: Any, start: int, stop: int) -> Any:
    return keras.tree.map_structure(lambda a: a[start:stop], x)


def _gradients(
    model: keras.Model,
    targets: list[PrunableWeight],
    x: Any,
    y: np.ndarray,
    count: int,
    batch_size: int,
    loss: Callable[[Any, Any], Any],
) -> list[np.ndarray]:
    """One ``(count, size)`` float32 matrix per target: a gradient per mini-batch, flattened."""
    variables = [t.variable for t in targets]
    out = [np.empty((count, int(np.prod(v.shape))), np.float32) for v in variables]
    for i in range(count):
        start = i * batch_size
        grads = loss_gradients(
            model,
            variables,
            _batch(x, start, start + batch_size),
            y[start : start + batch_size],
            loss=loss,
        )
        for matrix, grad in zip(out, grads):
            matrix[i] = np.asarray(grad, np.float32).reshape(-1)
    for matrix, target in zip(out, targets):
        if not np.all(np.isfinite(matrix)):
            raise ValueError(
                f"the loss gradients of {target.name} hold NaN/Inf on the calibration data; "
                "check the data, the targets and the loss"
            )
    return out


def _values(variable: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable))


def mfac_prune(
    model: keras.Model,
    calibration_data: Any,
    sparsity: float,
    *,
    layers: LayerSelector = None,
    num_gradients: int = 64,
    damping: float = 1e-2,
    block_size: int | None = 2048,
    loss: Any = None,
    batch_size: int = 1,
    steps: int = 1,
    verbose: int = 0,
) -> keras.Model:
    """A copy of ``model`` pruned in one shot by WoodFisher with M-FAC's inverse Fisher.

    The gradients ``g_1 .. g_m`` are loss gradients of the selected weights on
    consecutive mini-batches of ``batch_size`` calibration examples (per-sample
    with the default 1). ``F = lambda * I + G^T G / m`` is taken
    block-diagonal: each weight is flattened and cut into blocks of
    ``block_size`` entries (blocks never span two weights). Then:

    1. saliency ``rho_q = w_q^2 / (2 [F^-1]_qq)`` for every live weight;
    2. the ``round(s * total)`` lowest over all selected weights are pruned
       (weights already masked count as pruned and stay pruned);
    3. the rest move by ``dw = -F^-1 u`` with ``u_q = w_q / [F^-1]_qq`` on the
       newly pruned set (WoodFisher's independent OBS updates, summed; each
       block on its own), and the pruned entries are set to exactly zero.

    With ``steps = k`` this runs ``k`` times, to ``s * t / k`` at step ``t``,
    with gradients recomputed on the pruned model in between (the gradients
    of pruned entries are left out of ``F``). The user's model is never
    changed: everything is checked first, then a copy is pruned. Each pruned
    weight carries a :class:`tfcompress.pruning.PruningMask` constraint, as
    after ``GradualPruning``, so fine-tuning keeps the zeros; layers keep
    their names and classes. The copy is not compiled.

    Args:
        model: A built Sequential or Functional model.
        calibration_data: Labelled examples: ``(x, y)`` (``x`` in any form
            the model takes: an array, a list or dict of arrays) or a
            ``tf.data.Dataset``/iterable of ``(x, y)`` batches. At most
            ``num_gradients * batch_size`` examples are read.
        sparsity: Fraction of the selected weights to prune, in [0, 1).
        layers: Which layers: None (every prunable layer), names, classes or
            a predicate ``layer -> bool``.
        num_gradients: ``m``, the gradients in the Fisher (fewer if the data
            runs out, with a warning).
        damping: **Relative** damping (> 0): ``lambda`` is this times the mean
            diagonal of the empirical Fisher ``G^T G / m`` over the live
            selected weights (so it follows the gradients' scale). Larger
            values move the scores towards ``w^2`` (magnitude).
        block_size: Entries per block of the block-diagonal Fisher; None: one
            block per weight. Memory: the gradients (``4 m d`` bytes) plus
            ``8 m^2`` bytes per block.
        loss: ``loss(y_true, y_pred)`` or a Keras loss name; None: the loss the
            model is compiled with.
        batch_size: Examples per gradient (1: per-sample gradients, the
            empirical Fisher of the paper).
        steps: Pruning steps, each with fresh gradients.
        verbose: 1 prints each step (sparsity, damping, time).

    Returns:
        The pruned copy (``model.name`` kept).

    Raises:
        ValueError: Before anything is built, for a sparsity outside [0, 1), a
            count or size that is not a positive integer, a damping that is
            not a finite number > 0, no loss (not compiled and no ``loss=``),
            missing, empty, unlabelled or mis-shaped calibration data (the
            shapes named), fewer examples than one gradient needs, or a
            selection that matches no prunable layer; NaN/Inf gradients or
            pruned weights (the copy is dropped).
        TypeError: For a subclassed model (it cannot be copied).

    Example:
        >>> pruned = mfac_prune(model, (x_train[:256], y_train[:256]), 0.7,
        ...                     loss=keras.losses.SparseCategoricalCrossentropy(True))
        >>> tfc.summary(pruned)

    References:
        Singh, Alistarh. "WoodFisher: Efficient Second-Order Approximation for
        Neural Network Compression", NeurIPS 2020. Frantar, Kurtic, Alistarh.
        "M-FAC: Efficient Matrix-Free Approximations of Second-Order
        Information", NeurIPS 2021.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    sparsity = validate_sparsity(sparsity)
    num_gradients = _positive_int("num_gradients", num_gradients)
    batch_size = _positive_int("batch_size", batch_size)
    steps = _positive_int("steps", steps)
    block_size = _positive_int("block_size", block_size, none_ok=True)
    relative_damping(np.zeros(1), damping)  # validates it
    if isinstance(verbose, bool) or not isinstance(verbose, (int, np.integer)):
        raise ValueError(f"verbose must be 0 or 1, got {verbose!r}")
    loss_fn = _resolve_loss(model, loss)
    find_prunable(model, layers)  # a selection that matches nothing fails here
    # A copy (a subclassed model is refused here); the user's model is never touched.
    pruned, _ = rewrite_model(model, lambda layer: None)
    x, y, n = _labelled_data(calibration_data, model, num_gradients * batch_size)
    if n < batch_size:
        raise ValueError(
            f"calibration_data has {n} example(s), fewer than batch_size={batch_size} that one "
            "gradient needs"
        )
    count = min(num_gradients, n // batch_size)
    if count < num_gradients:
        warnings.warn(
            f"mfac_prune: calibration_data has {n} examples, enough for {count} gradients of "
            f"batch_size={batch_size}, not num_gradients={num_gradients}",
            stacklevel=2,
        )

    # Everything is checked: prune the copy.
    targets = find_prunable(pruned, layers)
    masks = [attach_mask(pruned, t.layer, t.variable) for t in targets]
    total = sum(int(np.prod(t.variable.shape)) for t in targets)
    for step in range(1, steps + 1):
        began = time.perf_counter()
        lam = _prune_step(
            pruned,
            targets,
            masks,
            (x, y),
            count,
            batch_size,
            loss_fn,
            round(sparsity * step / steps * total),
            damping,
            block_size,
        )
        if verbose:
            zeros = sum(int(np.sum(m.value() == 0)) for m in masks)
            print(
                f"mfac_prune: step {step}/{steps}: sparsity {zeros / total:.4f}, "
                f"{count} gradients, damping {lam:.3g}, {time.perf_counter() - began:.2f}s"
            )
    return pruned


def _prune_step(
    model: keras.Model,
    targets: list[PrunableWeight],
    masks: list[PruningMask],
    data: tuple[Any, np.ndarray],
    count: int,
    batch_size: int,
    loss: Callable[[Any, Any], Any],
    prune_count: int,
    damping: float,
    block_size: int | None,
) -> float:
    """Prunes ``model`` (a copy) to ``prune_count`` zeros in place; returns lambda."""
    weights = [_values(t.variable).reshape(-1) for t in targets]
    live = [m.value().reshape(-1) != 0 for m in masks]
    grads = _gradients(model, targets, data[0], data[1], count, batch_size, loss)
    for matrix, keep in zip(grads, live):
        matrix[:, ~keep] = 0.0  # the Fisher of the weights still alive
    lam = relative_damping([g[:, k] for g, k in zip(grads, live)], damping)
    fishers = [InverseFisher(g, lam, block_size=block_size) for g in grads]
    del grads
    scores = [
        np.where(keep, f.scores(w.astype(np.float64)), -np.inf)
        for f, w, keep in zip(fishers, weights, live)
    ]
    flat = np.concatenate(scores)
    order = np.argsort(flat, kind="stable")
    chosen = np.zeros(flat.size, bool)
    chosen[order[:prune_count]] = True
    chosen |= ~np.isfinite(flat)  # pruned before: stays pruned
    splits = np.cumsum([w.size for w in weights])[:-1]
    for target, mask, fisher, w, keep, prune in zip(
        targets, masks, fishers, weights, live, np.split(chosen, splits)
    ):
        new = prune & keep
        if not new.any():
            continue
        updated = (w.astype(np.float64) + fisher.removal_update(w, new)) * ~prune
        if not np.all(np.isfinite(updated)):
            raise ValueError(
                f"the WoodFisher update of {target.name} is not finite; raise damping "
                f"(lambda was {lam:.3g})"
            )
        shape = tuple(target.variable.shape)
        mask.mask.assign(
            (~prune).reshape(shape).astype(keras.backend.standardize_dtype(mask.mask.dtype))
        )
        target.variable.assign(updated.reshape(shape).astype(w.dtype))
    return lam

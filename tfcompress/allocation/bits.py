"""Per-layer weight bits for a file-size target: mixed precision by the budget solver.

``tfc.allocate.bits(model, calibration_data, target_ratio=0.15, choices=(2, 4, 8))``

1. **Candidates**: the model is quantized once per choice of bits with
   one-shot GPTQ (:func:`tfcompress.oneshot.quantize`, weight-only), giving
   every layer's weights at every width.
2. **Costs, from the files**: the model is exported once per width with
   every allocated layer at that width (round-to-nearest: bytes do not
   depend on the rounding), and each layer's weight tensor is found by name
   and weighed (:mod:`tfcompress.allocation.file_costs`): INT8, INT4 or INT2
   data (:mod:`tfcompress.export.low_bit`) plus its scales and zero points.
   This catches what a rule would miss (2-bit convolutions take INT4, an
   attention query with a folded factor leaves the grid and stays INT8).
   Everything else (biases, activation parameters, graph) is the widest
   file minus its weight tensors. The plan's predicted total is the file size
   of the applied plan up to flatbuffer padding (the tests check it).
3. **Errors**: per layer and width, the loss increase, output change, or
   HAWQ-V2 Hessian-trace sensitivity when that layer alone takes that width
   (:mod:`tfcompress.allocation.sensitivity`).
4. **Solve**: minimise the summed error subject to the byte budget, exactly,
   with the multiple-choice knapsack of :func:`tfcompress.core.budget.solve_budget`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.allocation.file_costs import formula_bytes, layer_tensor_bytes
from tfcompress.allocation.plan import LayerChoice, Plan
from tfcompress.allocation.sensitivity import (
    ERROR_MEASURES,
    ModelScorer,
    hutchinson_trace,
    swap_errors,
)
from tfcompress.core.budget import solve_budget
from tfcompress.core.calibration import calibration_data as check_calibration
from tfcompress.core.walk import walk_layers
from tfcompress.export.tflite import export
from tfcompress.oneshot import quantize as oneshot_quantize
from tfcompress.oneshot.grid import SUPPORTED_BITS
from tfcompress.quantization.quantize_model import QuantizeConfig

__all__ = ["BitsPlan", "bits", "container_bits"]


def container_bits(kind: str, bits: int) -> int:
    """Bits per weight a ``bits``-bit grid takes in the int8 TFLite file of a layer of ``kind``.

    ``kind`` is the class name of the layer holding the weights in the
    quantized model (``"QuantDense"``, ``"QuantConv2D"``, ``"EinsumDense"``,
    ...). Export stores weights on a 3-4 bit grid as INT4 and 2-bit
    ``FULLY_CONNECTED`` weights (Dense, EinsumDense) as INT2; convolutions
    cannot run INT2 filters in LiteRT, so they keep INT4 at 2 bits
    (:mod:`tfcompress.export.low_bit`).

    Example:
        >>> container_bits("QuantDense", 2), container_bits("QuantConv2D", 2)
        (2, 4)
    """
    if bits > 4:
        return 8
    convolution = "Conv" in kind
    return 2 if bits == 2 and not convolution else 4


@dataclasses.dataclass
class BitsPlan(Plan):
    """Weight bits per layer (from :func:`bits`).

    Attributes:
        method: ``"gptq"`` or ``"rtn"`` (how :meth:`apply` rounds).
        per_channel: One step per output channel (else per tensor).
        activations: Whether :meth:`apply` gives int8 activation ranges.
    """

    method: str = "gptq"
    per_channel: bool = False
    activations: bool = True

    def __post_init__(self):
        self._calibration: Any = None

    def apply(self, model: keras.Model, calibration_data: Any = None, verbose: int = 0):
        """The model quantized per the plan, in one shot (GPTQ with each layer's bits).

        Args:
            model: The model the plan was made for (not modified).
            calibration_data: Calibration inputs; defaults to those the plan
                was made with (a plan read back from JSON needs them).
            verbose: 1 shows the one-shot progress bar.

        Returns:
            ``tfc.oneshot.quantize``'s copy: export it with
            ``tfc.tflite_export.export(q, path, quantization="int8")``.
        """
        data = self._calibration if calibration_data is None else calibration_data
        if data is None:
            raise ValueError(
                "calibration_data is None and this plan holds none (it was read from JSON): "
                "pass the calibration inputs"
            )
        return oneshot_quantize(
            model,
            data,
            bits=self.choices,
            method=self.method,
            per_channel=self.per_channel,
            activations=self.activations,
            verbose=verbose,
        )

    def with_budget(self, target_bytes: int) -> BitsPlan:
        """The same layers, costs and errors re-solved for another file-size budget.

        The measurements (each option's bytes in the file and its error) do
        not depend on the budget, so a sweep over budgets measures once and
        re-solves the knapsack per budget, exactly as :func:`bits` would.

        Args:
            target_bytes: The new budget in bytes, between the smallest
                reachable file and the float32 file.

        Returns:
            A new :class:`BitsPlan` (this one is not changed).

        Raises:
            ValueError: A budget outside that range (the message names both ends),
                or a plan without per-option costs and errors.

        Example:
            >>> plans = [plan.with_budget(int(r * plan.dense_cost)) for r in (0.2, 0.15, 0.1)]
        """
        if any(not (layer.option_costs and layer.option_errors) for layer in self.layers):
            raise ValueError("this plan holds no per-option costs and errors to re-solve")
        budget = int(target_bytes)
        smallest = self.smallest_cost
        if not smallest <= budget <= self.dense_cost:
            raise ValueError(
                f"target_bytes must lie between the smallest file this plan reaches "
                f"({smallest:,.0f} B) and the float32 file ({self.dense_cost:,.0f} B); "
                f"received {target_bytes!r}"
            )
        costs = [[int(c) for c in layer.option_costs] for layer in self.layers]
        errors = [list(layer.option_errors) for layer in self.layers]
        solution = solve_budget(costs, errors, budget - int(self.fixed_cost))
        layers = [
            dataclasses.replace(
                layer,
                choice=layer.options[k],
                cost=float(layer.option_costs[k]),
                error=float(layer.option_errors[k]),
            )
            for layer, k in zip(self.layers, solution.choices)
        ]
        plan = dataclasses.replace(
            self,
            layers=layers,
            budget=float(budget),
            notes=[*self.notes, f"re-solved for {budget:,} B from the measured costs and errors"],
        )
        plan._calibration = self._calibration
        return plan

    def to_quantize_config(self, **kwargs: Any) -> QuantizeConfig:
        """A :class:`~tfcompress.QuantizeConfig` giving each planned layer its bits (for QAT).

        Keyword arguments are further ``QuantizeConfig`` fields. Layers are
        keyed by their own name (the last part of the plan's path).

        Example:
            >>> qat = tfc.quantize_model(model, plan.to_quantize_config())
        """
        overrides = dict(kwargs.pop("overrides", None) or {})
        for layer in self.layers:
            overrides[layer.layer.rsplit("/", 1)[-1]] = {"weight_bits": int(layer.choice)}
        return QuantizeConfig(overrides=overrides, **kwargs)


def _check_args(target_bytes, target_ratio, target_bits, choices, error, targets, loss, method):
    given = [t is not None for t in (target_bytes, target_ratio, target_bits)]
    if sum(given) != 1:
        raise ValueError(
            f"give exactly one of target_bytes, target_ratio and target_bits, got target_bytes="
            f"{target_bytes!r}, target_ratio={target_ratio!r} and target_bits={target_bits!r}"
        )
    if target_bits is not None and (
        isinstance(target_bits, bool)
        or not isinstance(target_bits, (int, np.integer))
        or target_bits not in SUPPORTED_BITS
    ):
        raise ValueError(
            f"target_bits must be one of {SUPPORTED_BITS} (the size of the uniform file at that "
            f"many bits), got {target_bits!r}"
        )
    if target_bytes is not None and (
        isinstance(target_bytes, bool)
        or not isinstance(target_bytes, (int, np.integer))
        or target_bytes <= 0
    ):
        raise ValueError(f"target_bytes must be a positive integer, got {target_bytes!r}")
    if target_ratio is not None:
        if isinstance(target_ratio, bool) or not isinstance(target_ratio, (int, float)):
            raise ValueError(f"target_ratio must be a number in (0, 1], got {target_ratio!r}")
        if not 0 < target_ratio <= 1:
            raise ValueError(
                f"target_ratio={target_ratio!r} is outside (0, 1]: it is the fraction of the "
                "float32 TFLite file's bytes, and a budget above the dense model compresses nothing"
            )
    choices = tuple(choices) if isinstance(choices, (list, tuple)) else choices
    if not isinstance(choices, tuple) or not choices:
        raise ValueError(f"choices={choices!r} is empty; expected bit widths such as (2, 4, 8)")
    for b in choices:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b not in SUPPORTED_BITS:
            raise ValueError(f"choices={choices!r} holds {b!r}; expected bits in {SUPPORTED_BITS}")
    if len(set(choices)) != len(choices):
        raise ValueError(f"choices={choices!r} repeats a width")
    if error not in ERROR_MEASURES:
        raise ValueError(f"error={error!r} is not one of {ERROR_MEASURES}")
    if error in ("loss", "hessian") and (targets is None or loss is None):
        raise ValueError(
            f"error={error!r} needs targets= (the calibration inputs' labels) and loss= "
            "(loss(y_true, y_pred)); without labels use error='output'"
        )
    if method not in ("gptq", "rtn"):
        raise ValueError(f"method={method!r} is not one of ('gptq', 'rtn')")
    return tuple(sorted(int(b) for b in choices))


def _file(model: keras.Model, quantization: str | None, data: Any) -> bytes:
    """The bytes ``tfc.tflite_export.export`` writes for ``model`` (not verified)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.tflite")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export(
                model,
                path,
                quantization=quantization,
                representative_data=data if quantization == "int8" else None,
                verify=False,
                verbose=0,
            )
        with open(path, "rb") as handle:
            return handle.read()


def _layers_by_path(model: keras.Model) -> dict[str, keras.layers.Layer]:
    return dict(walk_layers(model, sublayers=True, models=True))


def _kernel_installer(base: keras.Model, candidates: dict[int, keras.Model]):
    """``install(layer, bits)``: puts that width's kernel (and grid step) into ``base``."""
    base_layers = _layers_by_path(base)
    candidate_layers = {b: _layers_by_path(m) for b, m in candidates.items()}

    def install(name: str, bits: int) -> Callable[[], None]:
        layer = base_layers[name]
        source = candidate_layers[bits][name]
        saved = [(layer.kernel, np.asarray(keras.ops.convert_to_numpy(layer.kernel)))]
        state = getattr(layer, "quantizer_state", {}).get("kernel", {})
        if "step" in state:  # a wider grid holds the narrower one exactly: k*s, |k| <= q
            saved.append((state["step"], np.asarray(keras.ops.convert_to_numpy(state["step"]))))
            state["step"].assign(source.quantizer_state["kernel"]["step"])
        layer.kernel.assign(source.kernel)

        def undo() -> None:
            for variable, value in saved:
                variable.assign(value)

        return undo

    return install


def bits(
    model: keras.Model,
    calibration_data: Any,
    target_bytes: int | None = None,
    target_ratio: float | None = None,
    choices: Sequence[int] = (2, 4, 8),
    *,
    target_bits: float | None = None,
    error: str = "output",
    targets: Any = None,
    loss: Callable[[Any, Any], Any] | None = None,
    method: str = "gptq",
    per_channel: bool = False,
    activations: bool = True,
    layers: Any = None,
    max_samples: int | None = None,
    batch_size: int = 32,
    hessian_samples: int = 8,
    verbose: int = 1,
) -> BitsPlan:
    """Chooses each layer's weight bits so the int8 TFLite file fits a byte budget.

    Minimises ``sum_l e_l(b_l)`` subject to ``fixed + sum_l bytes_l(b_l) <= budget``
    over ``b_l`` in ``choices`` (exactly, by dynamic programming), where
    ``bytes_l(b)`` is what layer ``l``'s weights take in the file at ``b``
    bits and ``e_l(b)`` the error measure when layer ``l`` alone has ``b``
    bits (see the module docstring).

    Args:
        model: A trained, built Sequential or Functional model. Not modified.
        calibration_data: Typical inputs (a few hundred), as for
            :func:`tfcompress.oneshot.quantize`.
        target_bytes: The file-size budget in bytes.
        target_ratio: Or the budget as a fraction of the float32 TFLite file.
        target_bits: Or the budget as the size of the file with every
            allocated layer at ``target_bits`` bits (``4``: the uniform
            4-bit file), stored as the file stores it.
        choices: Candidate widths (2 to 8).
        error: ``"output"`` (relative output change; no labels),
            ``"loss"`` (loss increase) or ``"hessian"`` (HAWQ-V2: Hessian
            trace times the squared weight change); the last two need
            ``targets`` and ``loss``.
        targets: Labels of the calibration inputs (same order).
        loss: ``loss(y_true, y_pred)``, e.g.
            ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``.
        method: How candidates and :meth:`BitsPlan.apply` round: ``"gptq"`` or ``"rtn"``.
        per_channel: One grid step per output channel (False: per tensor, as
            int8 ``FULLY_CONNECTED`` needs).
        activations: Whether the applied model gets int8 activation ranges.
        layers: Which layers to allocate (as in ``tfc.oneshot.quantize``).
        max_samples: Calibration examples read at most (None: all given).
        batch_size: Examples per forward pass.
        hessian_samples: Hutchinson vectors per layer for ``error="hessian"``.
        verbose: 1 shows progress bars.

    Returns:
        A :class:`BitsPlan`; ``plan.apply(model)`` quantizes accordingly.

    Raises:
        ValueError: Not exactly one target; a ratio outside (0, 1] (a budget
            above the dense model); an empty or invalid ``choices``; missing
            or empty calibration data; ``error`` needing labels without them;
            a budget below the smallest achievable file (the message names
            it). All before anything is computed.

    Example:
        >>> plan = tfc.allocate.bits(model, x_train[:256], target_ratio=0.15, choices=(2, 4, 8))
        >>> print(plan)
        >>> small = plan.apply(model)
        >>> tfc.tflite_export.export(small, "mixed.tflite", quantization="int8")

    References:
        Dong et al., "HAWQ-V2: Hessian Aware trace-Weighted Quantization of
        Neural Networks", NeurIPS 2020. Frantar et al., "GPTQ", ICLR 2023.
    """
    choices = _check_args(
        target_bytes, target_ratio, target_bits, choices, error, targets, loss, method
    )
    calib = check_calibration(calibration_data, model, max_samples=max_samples)
    if targets is not None:
        targets = np.asarray(targets)[: calib.num_samples]
        if len(targets) != calib.num_samples:
            raise ValueError(
                f"targets has {len(targets)} examples for {calib.num_samples} calibration inputs"
            )
    data = calib.inputs()
    widest = max(choices)
    # Costs first, so an unreachable budget fails before the candidates are made: one file
    # per width with every allocated layer at that width and the activation ranges the
    # applied plan will have. Bytes do not depend on how weights were rounded: RTN suffices.
    files: dict[int, bytes] = {}
    report = None
    for b in sorted(choices, reverse=True):
        cost_model, rep = oneshot_quantize(
            model,
            data,
            bits=b,
            method="rtn",
            per_channel=per_channel,
            layers=layers,
            activations=activations,
            batch_size=batch_size,
            verbose=0,
            return_report=True,
        )
        report = report or rep
        files[b] = _file(cost_model, "int8", data)
    names = [r.name for r in report.layers]
    kinds = {r.name: r.kind for r in report.layers}
    sizes = {r.name: r.rows * r.columns * r.problems for r in report.layers}
    measured = {b: layer_tensor_bytes(files[b], names) for b in choices}
    estimated = sorted({n for n in names for b in choices if n not in measured[b]})
    costs = [
        [measured[b].get(n, formula_bytes(sizes[n], container_bits(kinds[n], b))) for b in choices]
        for n in names
    ]
    dense_bytes = len(_file(model, None, None))
    widest_file = len(files[widest])
    fixed = widest_file - sum(c[-1] for c in costs)
    if target_bytes is not None:
        budget = int(target_bytes)
        if budget > dense_bytes:
            raise ValueError(
                f"target_bytes={budget:,} is above the float32 file ({dense_bytes:,} B): a budget "
                "above the dense model compresses nothing"
            )
    elif target_ratio is not None:
        budget = int(target_ratio * dense_bytes)
    else:
        if target_bits in files:
            budget = len(files[target_bits])
        else:
            budget = fixed + sum(
                formula_bytes(sizes[n], container_bits(kinds[n], target_bits)) for n in names
            )
    smallest = fixed + sum(min(c) for c in costs)
    if budget < smallest:
        raise ValueError(
            f"the budget of {budget:,} bytes ({budget / dense_bytes:.4f} of the float32 file, "
            f"{dense_bytes:,} B) is unreachable with choices={choices}: the smallest file is "
            f"{smallest:,} bytes (target_ratio >= {smallest / dense_bytes:.4f})"
        )
    candidates = {
        b: oneshot_quantize(
            model,
            data,
            bits=b,
            method=method,
            per_channel=per_channel,
            layers=layers,
            activations=False,
            batch_size=batch_size,
            verbose=verbose,
        )
        for b in choices
    }
    base = candidates[widest]
    progress = keras.utils.Progbar(len(names) * len(choices), verbose=verbose, unit_name="option")
    if error == "hessian":
        errors = _hessian_errors(model, base, candidates, names, choices, calib, targets, loss)
    else:
        scorer = ModelScorer(model, calib, targets if error == "loss" else None, loss, batch_size)
        errors = swap_errors(
            base, names, choices, _kernel_installer(base, candidates), scorer.score, progress
        )
    solution = solve_budget(costs, errors.tolist(), budget - fixed)
    plan_layers = [
        LayerChoice(
            layer=name,
            choice=choices[k],
            cost=float(costs[i][k]),
            error=float(errors[i, k]),
            options=choices,
            option_costs=tuple(float(c) for c in costs[i]),
            option_errors=tuple(float(e) for e in errors[i]),
        )
        for i, (name, k) in enumerate(zip(names, solution.choices))
    ]
    uniform = [b for b in choices if fixed + sum(c[choices.index(b)] for c in costs) <= budget]
    notes = [
        f"costs: each layer's weight tensor in the int8 TFLite file at each width (data, scales, "
        f"zero points), read from {len(choices)} files; rest of the file from the {widest}-bit "
        f"file ({widest_file:,} B)",
        f"errors: {error} when one layer alone takes the width ({method}, "
        f"{calib.num_samples} calibration examples)",
    ]
    if estimated:
        notes.append(
            f"not found by name in the files, costs estimated from the width: {', '.join(estimated)}"
        )
    if uniform:
        notes.append(f"the widest uniform width within the budget is {max(uniform)} bits")
    plan = BitsPlan(
        layers=plan_layers,
        budget=float(budget),
        fixed_cost=float(fixed),
        dense_cost=float(dense_bytes),
        cost_name="file bytes",
        cost_unit="B",
        choice_name="bits",
        error_name=f"{error} error",
        notes=notes,
        method=method,
        per_channel=per_channel,
        activations=activations,
    )
    plan._calibration = data
    return plan


def _hessian_errors(model, base, candidates, names, choices, calib, targets, loss):
    """HAWQ-V2: ``Tr(H_l) / n_l * ||W_lb - W_l||^2``, ``H_l`` the float model's loss Hessian.

    ``W_l`` is the widest choice's kernel (within rounding of the float one, and
    folded with a following BatchNorm exactly like the narrower ones), so the
    widest choice has error 0 and the others the squared change from it.
    """
    float_layers = _layers_by_path(model)
    widest = _layers_by_path(base)
    candidate_layers = {b: _layers_by_path(m) for b, m in candidates.items()}
    x = calib.inputs(256)
    y = targets[:256]
    errors = np.zeros((len(names), len(choices)))
    for i, name in enumerate(names):
        # A negative estimate (away from a minimum, or noise) would reward rounding: clamp it.
        trace = max(hutchinson_trace(model, float_layers[name].kernel, x, y, loss), 0.0)
        reference = np.asarray(keras.ops.convert_to_numpy(widest[name].kernel), np.float64)
        for k, b in enumerate(choices):
            quantized = np.asarray(
                keras.ops.convert_to_numpy(candidate_layers[b][name].kernel), np.float64
            )
            errors[i, k] = trace / reference.size * float(np.sum((quantized - reference) ** 2))
    return errors

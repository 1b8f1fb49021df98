"""What a one-shot run did, layer by layer: errors, sparsity, bits, time, memory.

``tfc.oneshot.prune/quantize/compress(..., return_report=True)`` return
``(model, report)``. Each :class:`LayerReport` gives the layer's relative
reconstruction error ``||W X - W' X||^2 / ||W X||^2`` on the calibration
inputs that reached it (through the layers compressed before it), for the
method (``error``) and for the plain baseline at the same sparsity pattern
and grid (``baseline_error``: magnitude pruning and/or round-to-nearest,
no weight correction), both computed from the undamped Hessian.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["LayerReport", "OneShotReport"]


@dataclasses.dataclass
class LayerReport:
    """One compressed layer.

    Attributes:
        name: Qualified layer name (``"block0_attn/query"``).
        kind: Layer class.
        method: ``"sparsegpt"``, ``"obs"``, ``"magnitude"``, ``"gptq"``, ``"rtn"``, ...
        rows: Output rows of its weight matrix (per problem).
        columns: Input columns (the Hessian's size).
        problems: Independent problems (input channels of a depthwise kernel, else 1).
        samples: Calibration input vectors its Hessian was built from.
        sparsity: Fraction of zeros in the kernel after compression.
        bits: Weight bits (None: not quantized).
        baseline_error: Relative output error of the baseline (magnitude / round-to-nearest).
        error: Relative output error of the method.
        damping: Relative dampening used (``lambda`` of ``lambda * mean(diag H)``).
        seconds: Time to solve (Hessian factorisation and the method).
        working_bytes: Bytes of the arrays held for this layer (Hessian, factor,
            weight copies, the largest input batch).
        carrier: What holds the result in the returned model (``"mask"``,
            ``"QuantDense"``, ``"float weights on the grid"``, ...).
    """

    name: str
    kind: str
    method: str
    rows: int
    columns: int
    problems: int
    samples: int
    sparsity: float
    bits: int | None
    baseline_error: float
    error: float
    damping: float
    seconds: float
    working_bytes: int
    carrier: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class OneShotReport:
    """The whole run.

    Attributes:
        operation: ``"prune"``, ``"quantize"`` or ``"compress"``.
        method: The method name.
        pattern: ``"unstructured"``, an ``"N:M"`` string, or None (quantize).
        target_sparsity: Requested sparsity (None when not pruning).
        bits: Weight bits (None when not quantizing).
        layers: One :class:`LayerReport` per compressed layer, in the order compressed.
        skipped: ``(name, kind, reason)`` of selected layers left as they were.
        calibration_samples: Calibration examples used.
        passes: Forward passes over the calibration data (one per group of layers).
        seconds: Wall time of the whole call.
        capture_seconds: Of which forward passes and Hessian accumulation.
        peak_layer_bytes: The largest ``working_bytes`` of any layer: the
            memory the method itself holds at a time.
        cached_activation_bytes: The most activation bytes kept between two
            passes of a graph model (every calibration batch's tensors where
            the next pass resumes); 0 when each pass starts from the inputs.
        peak_rss_bytes: The process' resident-memory high-water mark after
            the run (includes everything the process did before).
        notes: What the user should know (e.g. layers whose grid the TFLite
            file cannot store as integers).
    """

    operation: str
    method: str
    pattern: str | None
    target_sparsity: float | None
    bits: int | None
    layers: list[LayerReport] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    calibration_samples: int = 0
    passes: int = 0
    seconds: float = 0.0
    capture_seconds: float = 0.0
    peak_layer_bytes: int = 0
    cached_activation_bytes: int = 0
    peak_rss_bytes: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def mean_error(self) -> float:
        """Mean relative error over the layers (NaN when there are none)."""
        if not self.layers:
            return math.nan
        return sum(r.error for r in self.layers) / len(self.layers)

    @property
    def mean_baseline_error(self) -> float:
        """Mean baseline relative error over the layers (NaN when there are none)."""
        if not self.layers:
            return math.nan
        return sum(r.baseline_error for r in self.layers) / len(self.layers)

    def layer(self, name: str) -> LayerReport:
        """The report of layer ``name`` (qualified or plain name).

        Raises:
            KeyError: If no layer of that name was compressed.
        """
        for report in self.layers:
            if name in (report.name, report.name.rsplit("/", 1)[-1]):
                return report
        raise KeyError(f"no compressed layer named {name!r}; have {[r.name for r in self.layers]}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def table(self) -> str:
        """A plain-text table, one line per layer."""
        header = (
            f"{'layer':<28} {'kind':<18} {'R x C':>11} {'n':>7} {'sparsity':>8} {'bits':>4} "
            f"{'baseline':>9} {'error':>9} {'damp':>6} {'sec':>6}  carrier"
        )
        lines = [header, "-" * len(header)]
        for r in self.layers:
            shape = f"{r.rows}x{r.columns}" + (f"x{r.problems}" if r.problems > 1 else "")
            lines.append(
                f"{r.name:<28.28} {r.kind:<18.18} {shape:>11} {r.samples:>7} {r.sparsity:>8.3f} "
                f"{r.bits if r.bits is not None else '-':>4} {r.baseline_error:>9.3g} "
                f"{r.error:>9.3g} {r.damping:>6.2g} {r.seconds:>6.2f}  {r.carrier}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        what = [self.operation, self.method]
        if self.pattern is not None:
            what.append(self.pattern)
        if self.target_sparsity is not None:
            what.append(f"sparsity {self.target_sparsity:g}")
        if self.bits is not None:
            what.append(f"{self.bits} bits")
        lines = [
            " ".join(what)
            + f": {len(self.layers)} layer(s), {self.calibration_samples} calibration samples, "
            f"{self.passes} passes, {self.seconds:.1f} s ({self.capture_seconds:.1f} s capture), "
            f"peak layer memory {self.peak_layer_bytes / 2**20:.1f} MiB",
            self.table(),
        ]
        lines += [f"skipped {name} ({kind}): {why}" for name, kind, why in self.skipped]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

"""Sequential capture: each layer's Hessian from inputs that flow through the layers already compressed.

One-shot methods compress layers one at a time, in the order the model calls
them, and each layer must see its inputs as the *compressed* earlier layers
produce them, so that it corrects their errors rather than compound them.
:func:`run_sequential` does that with bounded memory:

1. one *discovery* forward pass on the first calibration batch records the
   order in which the target layers are called, and which consecutive ones
   receive the very same input (the query/key/value projections of a
   self-attention layer): those form one *group*, whose members cannot affect
   each other's inputs and so share one pass;
2. for each group, in call order, the calibration data is streamed batch by
   batch through the model; the group's layers add their input vectors to
   their Hessian sums (:class:`~tfcompress.oneshot.hessian.HessianSum`) and the
   forward pass is cut short right after the group's last call (nothing
   downstream is computed); then ``solve(group)`` compresses the group's
   layers in place before the next pass.

A graph model (Functional, or Sequential with an input shape) runs node by
node (:class:`~tfcompress.core.graph_runner.GraphRunner`): each activation is
dropped after its last use, and each pass keeps, for every batch, the
activations alive just before the node of its group's first call; the next
pass resumes there instead of at the model's inputs (the group's compressed
layers are re-run, everything upstream is not). Memory: those kept
activations, one node's temporaries and the Hessians of one group. Other
models (subclassed) run whole from their inputs in every pass. The layers'
``call`` is wrapped for the run and restored afterwards, even on error, so
layers inside ``MultiHeadAttention`` and nested models are seen too.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.core.calibration import CalibrationData
from tfcompress.core.graph_runner import Frontier, GraphRunner
from tfcompress.oneshot.hessian import HessianSum, single_threaded_blas
from tfcompress.oneshot.rules import LayerRule
from tfcompress.quantization.base import Quantizer

__all__ = [
    "Pass",
    "SequentialRun",
    "Target",
    "advance",
    "bypass_quantizers",
    "discover_groups",
    "forward",
    "run_sequential",
]

_MISSING = object()
_QUANTIZER_ATTRIBUTES = ("input_quantizer", "kernel_quantizer", "activation_quantizer", "quantizer")


class _Stop(Exception):
    """Raised inside a wrapped call to end a forward pass early."""


@dataclasses.dataclass
class Target:
    """A layer to compress.

    Attributes:
        name: Qualified name (``"block0_attn/query"``).
        rule: Its :class:`~tfcompress.oneshot.rules.LayerRule` (on the working copy).
        hessian: The Hessian sum of the current pass.
        largest_batch_bytes: Bytes of the largest input batch seen (with its
            input vectors when they are a copy, e.g. im2col patches).
    """

    name: str
    rule: LayerRule
    hessian: HessianSum | None = None
    largest_batch_bytes: int = 0

    @property
    def layer(self) -> keras.layers.Layer:
        return self.rule.layer

    def add(self, x: Any) -> None:
        array = np.asarray(keras.ops.convert_to_numpy(x), np.float32)
        vectors = self.rule.input_vectors(array)
        held = array.nbytes + (vectors.nbytes if vectors.base is None else 0)
        self.largest_batch_bytes = max(self.largest_batch_bytes, held)
        if self.hessian is None:
            self.hessian = HessianSum(self.rule.groups, self.rule.columns)
        with single_threaded_blas():
            if vectors.ndim == 3:
                self.hessian.add_grouped(vectors)
            else:
                self.hessian.add_rows(vectors)


@contextlib.contextmanager
def _wrapped(targets: Sequence[Target], on_call: Callable[[int, Any], None]) -> Iterator[None]:
    """Wraps each target's ``call``: ``on_call(index, first positional input)`` runs first."""
    saved = [(t.layer, t.layer.__dict__.get("call", _MISSING)) for t in targets]

    def wrap(index: int, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            on_call(index, args[0] if args else kwargs.get("inputs"))
            return original(*args, **kwargs)

        return call

    try:
        for index, target in enumerate(targets):
            object.__setattr__(target.layer, "call", wrap(index, target.layer.call))
        yield
    finally:
        for layer, previous in saved:
            if previous is _MISSING:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", previous)


@contextlib.contextmanager
def bypass_quantizers(model: keras.Model, ranges: dict | None = None) -> Iterator[None]:
    """Makes every tfcompress quantizer of ``model`` the identity for the duration.

    One-shot methods capture float activations: the kernels they have already
    rounded sit on their grid (rounding them again changes nothing), the ones
    not yet reached must stay float, and activation ranges are not known yet.
    With ``ranges``, each stateful range quantizer (moving min/max) records the
    ``(state, quantizer, min, max)`` of what passes through it, keyed by the id
    of its ``"min"`` variable.
    """
    patched: dict[int, Any] = {}

    def recorder(quantizer: Quantizer) -> Callable[..., Any]:
        def call(x: Any, state: dict, training: bool) -> Any:
            if ranges is not None and state and "min" in state and "max" in state:
                value = keras.ops.convert_to_numpy(x)
                low, high = float(np.min(value)), float(np.max(value))
                old = ranges.get(id(state["min"]))
                if old is not None:
                    low, high = min(old[2], low), max(old[3], high)
                ranges[id(state["min"])] = (state, quantizer, low, high)
            return x

        return call

    try:
        for layer in model._flatten_layers(include_self=False, recursive=True):
            for attribute in _QUANTIZER_ATTRIBUTES:
                quantizer = layer.__dict__.get(attribute)
                if isinstance(quantizer, Quantizer) and id(quantizer) not in patched:
                    object.__setattr__(quantizer, "call", recorder(quantizer))
                    patched[id(quantizer)] = quantizer
        yield
    finally:
        for quantizer in patched.values():
            object.__delattr__(quantizer, "call")


def forward(model: keras.Model, batch: Any, runner: GraphRunner | None = None) -> None:
    """Runs ``model`` on ``batch`` (inference mode), ending quietly where a pass stops it.

    With ``runner`` (a :class:`GraphRunner` of ``model``), node by node: each
    activation is dropped after its last use instead of when the call returns.
    """
    if runner is not None:
        runner.run(runner.start(batch), stop=_Stop)
        return
    with contextlib.suppress(_Stop):
        model(batch, training=False)


@dataclasses.dataclass
class Pass:
    """One capture pass: a group of targets and where the pass starts and stops.

    Attributes:
        members: Target indices whose Hessians this pass fills.
        last: Position (in the call sequence) of the last call to wait for.
        first_node: Graph node of the group's first call (None: not a graph run).
    """

    members: list[int]
    last: int
    first_node: int | None = None


def discover_groups(
    model: keras.Model, targets: Sequence[Target], batch: Any, runner: GraphRunner | None = None
) -> tuple[list[Pass], list[int], list[int]]:
    """Call order and grouping from one forward pass.

    Returns:
        ``(passes, never_called, call_nodes)``: the passes in call order;
        the targets the model did not call; for a graph run, the node of
        each call in the sequence (empty otherwise).
    """
    sequence: list[int] = []
    call_nodes: list[int] = []
    # Whether each call's input equals the previous call's: only the last input is held
    # (a model that frees its activations keeps doing so during this pass).
    same_as_previous: list[bool] = []
    previous: list[Any] = []

    def on_call(index: int, x: Any) -> None:
        sequence.append(index)
        if runner is not None:
            call_nodes.append(runner.position)
        same_as_previous.append(bool(previous) and _same_input(previous[0], x))
        previous[:] = [x]

    with _wrapped(targets, on_call):
        forward(model, batch, runner)
    previous.clear()
    counts = Counter(sequence)
    planned: set[int] = set()
    passes: list[Pass] = []
    for position, index in enumerate(sequence):
        if index in planned:
            continue
        group = [index]
        if counts[index] == 1:
            follow = position + 1
            while (
                follow < len(sequence)
                and sequence[follow] not in planned
                and sequence[follow] not in group
                and counts[sequence[follow]] == 1
                # Equal to the call before, which equals the group's first: equal to it.
                and same_as_previous[follow]
            ):
                group.append(sequence[follow])
                follow += 1
        planned.update(group)
        last = max(p for p, i in enumerate(sequence) if i in group)
        step = Pass(group, last)
        if runner is not None:
            step.first_node = call_nodes[position]
        passes.append(step)
    never_called = [i for i in range(len(targets)) if i not in counts]
    return passes, never_called, call_nodes


def _same_input(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        if tuple(a.shape) != tuple(b.shape):  # no copies of inputs that cannot be equal
            return False
    except Exception:  # no shape: compared below
        pass
    try:
        x, y = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
    except Exception:  # a non-tensor input
        return False
    return x.shape == y.shape and bool(np.array_equal(x, y))


class _PassCounter:
    """Feeds the group's inputs to their Hessians and stops the pass after its last call."""

    def __init__(self, targets: Sequence[Target], members: set[int], last: int):
        self.targets, self.members, self.last = targets, members, last
        self.position = 0

    def on_call(self, index: int, x: Any) -> None:
        here = self.position
        self.position += 1
        if index in self.members:
            self.targets[index].add(x)
        if here == self.last:
            raise _Stop()


def advance(runner: GraphRunner, frontier: Frontier, keep_at: int | None) -> Frontier | None:
    """Runs one calibration batch on from ``frontier`` until the pass stops it.

    Returns the tensors alive just before node ``keep_at`` (where the next pass
    starts), or None when that point lies behind ``frontier``.
    """
    _, kept = runner.run(frontier, stop=_Stop, keep_at=keep_at)
    return kept


@dataclasses.dataclass
class SequentialRun:
    """What :func:`run_sequential` did.

    Attributes:
        passes: Capture passes (one per group).
        never_called: Indices of targets the model never called.
        cached_bytes: The most bytes of activations kept between two passes
            (every calibration batch's tensors at the node where the next pass
            starts); 0 when every pass starts from the model's inputs.
    """

    passes: int
    never_called: list[int]
    cached_bytes: int = 0


def run_sequential(
    model: keras.Model,
    targets: Sequence[Target],
    calibration: CalibrationData,
    solve: Callable[[list[Target]], None],
    *,
    batch_size: int = 32,
) -> SequentialRun:
    """Streams calibration batches group by group and calls ``solve`` after each group.

    A graph model (Functional, or Sequential with an input shape) is run node
    by node with :class:`~tfcompress.core.graph_runner.GraphRunner`: each
    tensor is dropped after its last use, and each pass keeps the tensors
    alive just before the node where the next pass must start (the node of
    this group's first call, whose outputs change once the group is
    compressed), so the next pass resumes there instead of at the inputs.
    Other models run whole, each pass from the inputs.

    Args:
        model: The working copy whose targets are compressed in place.
        targets: The layers to compress.
        calibration: Checked calibration inputs.
        solve: Called with each group's targets (Hessians filled); it compresses
            them in place. Their Hessians are dropped afterwards.
        batch_size: Calibration examples per forward pass.
    """
    runner = GraphRunner(model) if GraphRunner.supports(model) else None
    first = next(calibration.input_batches(batch_size))
    passes, never_called, call_nodes = discover_groups(model, targets, first, runner)
    del first
    run = SequentialRun(len(passes), never_called)
    cached: list[Frontier] | None = None
    for number, step in enumerate(passes):
        counter = _PassCounter(targets, set(step.members), step.last)
        keep_at = None
        if runner is not None and number + 1 < len(passes):
            keep_at = min(step.first_node, passes[number + 1].first_node)
        starts = cached
        kept: list[Frontier | None] = []
        with _wrapped(targets, counter.on_call):
            if runner is None:
                for batch in calibration.input_batches(batch_size):
                    counter.position = 0
                    forward(model, batch)
            else:
                if starts is None:  # from the inputs
                    starts = (runner.start(b) for b in calibration.input_batches(batch_size))
                for frontier in starts:
                    # Calls made by the nodes this pass does not re-run.
                    counter.position = bisect.bisect_left(call_nodes, frontier.position)
                    kept.append(advance(runner, frontier, keep_at))
                    del frontier
        del starts
        cached = kept if kept and all(k is not None for k in kept) else None
        del kept
        if cached is not None:
            run.cached_bytes = max(run.cached_bytes, sum(k.nbytes() for k in cached))
        solve([targets[i] for i in step.members])
        for i in step.members:
            targets[i].hessian = None
    return run

"""Running a Functional model's graph node by node, and resuming it from where it stopped.

``model(x)`` on a Keras Functional model keeps every intermediate tensor until
the call returns (its graph runner fills one dictionary and never empties it),
so one eager pass through a deep model holds all of its activations at once.
Layer-by-layer methods (one-shot compression) also pass the same data through
the same first layers again and again. :class:`GraphRunner` does both better:

* it calls the graph's nodes in Keras' own order, with the same arguments,
  and drops each tensor after its last consumer has run, so a pass holds only
  the tensors still needed (for a transformer: the residual stream and one
  block's temporaries);
* a pass can be stopped from inside a node (an exception raised there, e.g. by
  a wrapped layer ``call``) and leaves a :class:`Frontier`: the tensors alive
  just before a chosen node, from which a later pass resumes without
  recomputing what lies upstream.

Only graph models are supported (Functional, and Sequential models built with
a known input shape); :meth:`GraphRunner.supports` says whether a model is
one. A model whose class overrides ``call`` is not: its call is not its graph.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import keras
import numpy as np

__all__ = ["Frontier", "GraphRunner"]


@dataclasses.dataclass
class Frontier:
    """The tensors alive just before node ``position`` of a pass (keyed by graph tensor id)."""

    position: int
    tensors: dict[int, Any]

    def nbytes(self) -> int:
        """Bytes held by the tensors (non-tensor values are not counted)."""
        total = 0
        for value in self.tensors.values():
            if hasattr(value, "shape") and hasattr(value, "dtype"):
                dtype = np.dtype(keras.backend.standardize_dtype(value.dtype))
                total += int(np.prod(value.shape)) * dtype.itemsize
        return total


def _graph_of(model: keras.Model) -> keras.Model | None:
    """The Functional graph that ``model.call`` runs, or None when it runs something else."""
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if type(model).call is keras.Sequential.call and functional is not None:
            return _graph_of(functional)
        return None
    # Keras' graph class (not public): found by name in the class's bases.
    functional = next((c for c in type(model).__mro__ if c.__name__ == "Functional"), None)
    if functional is not None and type(model).call is functional.call:
        return model
    return None


class GraphRunner:
    """Calls a graph model's nodes one at a time, freeing each tensor after its last use.

    Args:
        model: A built Functional or Sequential model (see :meth:`supports`).
        training: Passed to every node whose layer takes ``training``, as
            ``model(x, training=training)`` does.

    Example::

        runner = GraphRunner(model)
        frontier = runner.start(x)
        outputs, _ = runner.run(frontier)       # equals model(x, training=False)

    Attributes:
        position: The node being called (for callbacks fired from inside it).
        nodes: The graph's operation nodes, in the order they are called.
    """

    def __init__(self, model: keras.Model, training: bool | None = False):
        graph = _graph_of(model)
        if graph is None:
            raise TypeError(
                f"model {model.name!r} ({type(model).__name__}) is not a graph model; "
                "GraphRunner runs Functional and built Sequential models"
            )
        self.graph, self.training = graph, training
        self.nodes = []
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                if node.operation is not None and not node.is_input:
                    self.nodes.append(node)
        self.position = -1

    @staticmethod
    def supports(model: keras.Model) -> bool:
        """Whether ``model``'s call is its graph (Functional, or Sequential with one)."""
        return _graph_of(model) is not None

    def start(self, inputs: Any) -> Frontier:
        """A frontier at node 0 holding the model's (standardized) inputs."""
        flat = self.graph._standardize_inputs(inputs)
        return Frontier(0, {id(x): y for x, y in zip(self.graph.inputs, flat)})

    def run(
        self,
        frontier: Frontier,
        *,
        stop: type[BaseException] | None = None,
        keep_at: int | None = None,
    ) -> Any:
        """Calls the nodes from ``frontier.position`` on; updates ``frontier`` in place.

        Args:
            frontier: Where to start; consumed (it ends where this pass ends).
            stop: An exception type that a node may raise to end the pass
                there: the pass then returns None with ``frontier`` holding the
                tensors alive just before that node (which did not complete).
            keep_at: A node position: the tensors alive just before it are
                also returned, as a second :class:`Frontier` (None if the pass
                stopped before reaching it or ``keep_at < frontier.position``).

        Returns:
            ``(outputs, kept)``: the model's outputs (structured like
            ``model(x)``; None when the pass stopped) and the frontier kept at
            ``keep_at`` (or None).
        """
        tensors = frontier.tensors
        reads = self._reads_after(frontier.position)
        kept = None
        for position in range(frontier.position, len(self.nodes)):
            if position == keep_at:
                kept = Frontier(position, dict(tensors))
            node = self.nodes[position]
            if any(id(x) not in tensors for x in node.input_tensors):
                continue  # not computable from these inputs: Keras skips it too
            args, kwargs = node.arguments.fill_in(tensors)
            operation = node.operation
            if self.training is not None and getattr(operation, "_call_has_training_arg", False):
                kwargs["training"] = self.training
            self.position = frontier.position = position
            try:
                outputs = operation(*args, **kwargs)
            except BaseException as error:
                if stop is not None and isinstance(error, stop):
                    return None, kept
                raise
            finally:
                self.position = -1
            del args, kwargs
            for x, y in zip(node.outputs, keras.tree.flatten(outputs)):
                tensors[id(x)] = y
            del outputs
            for x in node.input_tensors:
                reads[id(x)] -= 1
                if reads[id(x)] <= 0:
                    tensors.pop(id(x), None)
        frontier.position = len(self.nodes)
        missing = [x.name for x in self.graph.outputs if id(x) not in tensors]
        if missing:
            raise ValueError(f"outputs {missing} of {self.graph.name!r} were not computed")
        outputs = keras.tree.pack_sequence_as(
            self.graph._outputs_struct, [tensors[id(x)] for x in self.graph.outputs]
        )
        if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
            outputs = outputs[0]
        return outputs, kept

    def _reads_after(self, position: int) -> Counter:
        """Reads still to come from node ``position`` on; outputs count once (never dropped)."""
        reads = Counter(id(x) for node in self.nodes[position:] for x in node.input_tensors)
        for x in self.graph.outputs:
            reads[id(x)] += 1
        return reads

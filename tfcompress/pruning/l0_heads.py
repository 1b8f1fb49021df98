"""L0 gates on attention heads: ``GatedMultiHeadAttention``, used only while gates train.

A head's output (before the output projection) is multiplied by its
hard-concrete gate, so a gate at 0 silences the whole head: its query, key,
value and output slices are then masked and ``shrink_model`` removes the head;
a gate in ``(0, 1)`` folds into the head's rows of the output projection
(``W_o[h] * z_h``, exact). Every MACs term of the layer (the four projections,
the scores and the weighted sum) is proportional to the number of heads.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress.core.rewrite import Replacement
from tfcompress.pruning.hard_concrete import HardConcreteGate

__all__ = ["GatedMultiHeadAttention", "gated_attention", "head_variables", "plain_attention"]

_PROJECTIONS = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")


@keras.saving.register_keras_serializable(package="tfcompress")
class GatedMultiHeadAttention(keras.layers.MultiHeadAttention):
    """``keras.layers.MultiHeadAttention`` with a :class:`HardConcreteGate` per head.

    Made by :func:`tfcompress.pruning.add_l0_gates` and turned back into a plain
    ``MultiHeadAttention`` by :func:`tfcompress.pruning.remove_l0_gates`.

    Args:
        gate: The head gate's settings (``HardConcreteGate`` arguments).
        **kwargs: ``keras.layers.MultiHeadAttention`` arguments.

    Example:
        >>> layer = GatedMultiHeadAttention(num_heads=4, key_dim=8, gate={"seed": 1})
        >>> y = layer(x, x)  # at inference every head is open (z = 1)
        >>> layer.head_gate.open_probability().shape
        (4,)
    """

    def __init__(self, gate: dict | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.gate = dict(gate or {})
        self.head_gate = HardConcreteGate(**self.gate, name="head_gate")

    def build(self, query_shape: Any, value_shape: Any = None, key_shape: Any = None) -> None:
        super().build(query_shape, query_shape if value_shape is None else value_shape, key_shape)
        self.head_gate.build((None, self.num_heads))

    def call(self, query: Any, value: Any = None, key: Any = None, **kwargs: Any) -> Any:
        """As ``MultiHeadAttention.call``; ``value=None`` attends the query to itself."""
        return super().call(query, query if value is None else value, key, **kwargs)

    def compute_output_shape(
        self, query_shape: Any, value_shape: Any = None, key_shape: Any = None
    ) -> Any:
        value_shape = query_shape if value_shape is None else value_shape
        return super().compute_output_shape(query_shape, value_shape, key_shape)

    def _compute_attention(
        self,
        query: Any,
        key: Any,
        value: Any,
        attention_mask: Any = None,
        training: Any = None,
        return_attention_scores: bool = False,
        **kwargs: Any,
    ) -> Any:
        output, scores = super()._compute_attention(
            query, key, value, attention_mask, training, return_attention_scores, **kwargs
        )
        z = self.head_gate(ops.ones((1, self.num_heads), output.dtype), training=training)
        return output * ops.reshape(z, (self.num_heads, 1)), scores

    def get_config(self) -> dict:
        config = super().get_config()
        config["gate"] = dict(self.gate)
        return config


def _copy_projections(new: keras.layers.MultiHeadAttention, old: Any) -> None:
    for attribute in _PROJECTIONS:
        getattr(new, attribute).set_weights(getattr(old, attribute).get_weights())


def gated_attention(layer: keras.layers.MultiHeadAttention, gate: dict) -> Replacement:
    """The replacement of ``layer`` by a gated copy (same name and weights)."""
    config = layer.get_config()
    return Replacement(GatedMultiHeadAttention(gate=gate, **config), _copy_projections)


def plain_attention(layer: GatedMultiHeadAttention) -> Replacement:
    """The replacement of a gated layer by a plain ``MultiHeadAttention``."""
    config = layer.get_config()
    config.pop("gate")
    return Replacement(keras.layers.MultiHeadAttention.from_config(config), _copy_projections)


def head_variables(layer: keras.layers.MultiHeadAttention) -> list[tuple[Any, int]]:
    """``(variable, head axis)`` of every weight a silenced head's mask covers."""
    found = []
    for attribute in _PROJECTIONS:
        dense = getattr(layer, attribute)
        output = attribute == "_output_dense"
        found.append((dense.kernel, 0 if output else 1))
        if dense.bias is not None and not output:
            found.append((dense.bias, 0))
    return found


def fold_heads(layer: keras.layers.MultiHeadAttention, z: np.ndarray) -> None:
    """Multiplies each head's rows of the output projection by its gate value."""
    kernel = layer._output_dense.kernel
    value = np.asarray(keras.ops.convert_to_numpy(kernel))
    kernel.assign((value * z.reshape(-1, 1, 1)).astype(value.dtype))

"""TransferredConv2D: a Conv2D whose filters are a learned base set under a group of transforms.

The layer stores ``filters / |G|`` base filters and builds the full kernel in
``call`` by rotating and flipping them (``keras.ops`` transpose + reverse), so
it runs on every Keras backend and exports to TFLite as one ordinary
``CONV_2D``: the kernel construction reads only constants, and the converter
folds it. :func:`~tfcompress.compact.transferred_convert.to_transferred` converts the Conv2D layers of a trained model,
starting each from the least-squares projection of its kernel.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = [
    "GROUPS",
    "FilterGroup",
    "TransferredConv2D",
    "project_kernel",
    "transfer_kernel",
]


@dataclasses.dataclass(frozen=True)
class FilterGroup:
    """A group of kernel transforms, each ``R^k H^f``.

    ``R`` rotates a ``(kh, kw, ...)`` kernel by 90 degrees counterclockwise
    (``np.rot90(w, 1, axes=(0, 1))``), ``H`` flips it horizontally (reverses
    ``kw``). Element ``g = (k, f)`` maps ``w`` to ``R^k(H^f(w))``.

    Attributes:
        name: The name ``group=`` takes.
        elements: ``(k, f)`` per element, in filter order; the identity first.
    """

    name: str
    elements: tuple[tuple[int, int], ...]

    @property
    def size(self) -> int:
        return len(self.elements)

    @property
    def needs_square(self) -> bool:
        """Whether a quarter turn is in the group (it swaps ``kh`` and ``kw``)."""
        return any(k % 2 for k, _ in self.elements)


#: The groups ``group=`` accepts. ``"flips2"`` is {identity, horizontal flip,
#: vertical flip (``R^2 H``), both (``R^2``)}: it keeps ``kh`` and ``kw``, so
#: it fits non-square kernels.
GROUPS: dict[str, FilterGroup] = {
    g.name: g
    for g in (
        FilterGroup("rotations", ((0, 0), (1, 0), (2, 0), (3, 0))),
        FilterGroup("flips", ((0, 0), (0, 1))),
        FilterGroup("flips2", ((0, 0), (0, 1), (2, 1), (2, 0))),
        FilterGroup("d4", tuple((k, f) for f in (0, 1) for k in range(4))),
    )
}


def filter_group(group: str | FilterGroup, argument: str = "group") -> FilterGroup:
    """The :class:`FilterGroup` of :data:`GROUPS` named ``group`` (else a ValueError)."""
    if isinstance(group, FilterGroup) and GROUPS.get(group.name) == group:
        return group
    if isinstance(group, str) and group.lower() in GROUPS:
        return GROUPS[group.lower()]
    raise ValueError(f"{argument} must be one of {sorted(GROUPS)}, got {group!r}")


def _check_fits(group: FilterGroup, filters: int, kernel_size: tuple[int, int]) -> str | None:
    """None if ``group`` fits a ``filters``-filter, ``kernel_size`` kernel, else why not."""
    if filters % group.size:
        return (
            f"filters must be divisible by the size of group {group.name!r} ({group.size}), "
            f"got filters={filters}"
        )
    if group.needs_square and kernel_size[0] != kernel_size[1]:
        return (
            f"group {group.name!r} rotates by 90 degrees and needs a square kernel, got "
            f"kernel_size={kernel_size}; use 'flips' or 'flips2' for non-square kernels"
        )
    return None


# --- the kernel construction: keras.ops and a NumPy reference ------------------
def _ops_transform(w: Any, k: int, f: int) -> Any:
    """``R^k(H^f(w))`` with keras.ops: ``H`` reverses ``kw``; ``R`` is ``H``, then kh <-> kw."""
    if f:
        w = ops.flip(w, axis=1)
    for _ in range(k):
        w = ops.transpose(ops.flip(w, axis=1), (1, 0, 2, 3))
    return w


def _np_transform(w: np.ndarray, k: int, f: int, inverse: bool = False) -> np.ndarray:
    if inverse:  # (R^k H^f)^-1 = H^f R^-k
        w = np.rot90(w, -k, axes=(0, 1))
        return np.flip(w, 1) if f else w
    return np.rot90(np.flip(w, 1) if f else w, k, axes=(0, 1))


def transfer_kernel(base: np.ndarray, group: str | FilterGroup) -> np.ndarray:
    """NumPy reference: the ``(kh, kw, cin, nb * |G|)`` kernel of ``nb`` base filters.

    Filter ``b * |G| + g`` is element ``g`` of the group applied to base filter
    ``b`` (consecutive filters share a base).
    """
    group = filter_group(group)
    base = np.asarray(base)
    parts = [_np_transform(base, k, f) for k, f in group.elements]
    stacked = np.stack(parts, axis=-1)
    return stacked.reshape(*stacked.shape[:3], -1)


def project_kernel(kernel: np.ndarray, group: str | FilterGroup) -> np.ndarray:
    """The base filters whose transferred kernel is nearest ``kernel`` (least squares).

    Each transform permutes the kernel's entries, so the best base filter of
    the block ``b`` is the mean over ``g`` of ``g^-1`` applied to filter
    ``b * |G| + g``.

    Args:
        kernel: A ``(kh, kw, cin, filters)`` kernel, ``filters`` divisible by ``|G|``.
        group: A group name or :class:`FilterGroup`.

    Returns:
        The ``(kh, kw, cin, filters / |G|)`` base filters (float64).
    """
    group = filter_group(group)
    w = np.asarray(kernel, dtype=np.float64)
    reason = _check_fits(group, w.shape[3], w.shape[:2])
    if reason is not None:
        raise ValueError(reason)
    blocks = w.reshape(*w.shape[:3], -1, group.size)
    inverse = [
        _np_transform(blocks[..., i], k, f, inverse=True) for i, (k, f) in enumerate(group.elements)
    ]
    return np.mean(inverse, axis=0)


def _pair(value: Any, argument: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair: tuple[int, ...] = (int(value), int(value))
    else:
        try:
            pair = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            pair = ()
    if len(pair) != 2 or any(v < 1 for v in pair):
        raise ValueError(f"{argument} must be a positive int or a pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


_SERIALIZERS = {
    "activation": keras.activations.serialize,
    **dict.fromkeys(("kernel_initializer", "bias_initializer"), keras.initializers.serialize),
    **dict.fromkeys(
        ("kernel_regularizer", "bias_regularizer", "activity_regularizer"),
        keras.regularizers.serialize,
    ),
    **dict.fromkeys(("kernel_constraint", "bias_constraint"), keras.constraints.serialize),
}


def _numpy(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


@keras.saving.register_keras_serializable(package="tfcompress")
class TransferredConv2D(keras.layers.Layer):
    """A Conv2D whose filters are a learned base set under a group of transforms.

    The layer learns ``filters / |G|`` base filters ``v_b`` of shape
    ``(kh, kw, cin)`` and convolves with ``w[..., b * |G| + g] = T_g(v_b)``
    (consecutive filters share a base) for the transforms ``T_g`` of
    ``group``: ``"rotations"`` (by 90 degrees, C4; square kernels),
    ``"flips"`` (identity, horizontal flip), ``"flips2"`` (identity,
    horizontal, vertical and both flips) or ``"d4"`` (rotations and flips, 8
    elements; square kernels). Kernel weights are divided by ``|G|``; the bias
    is one per base filter, shared by its ``|G|`` copies, so the layer is
    exactly equivariant: with ``'same'`` padding, stride 1 and an odd square
    kernel, transforming the input by ``g`` transforms every output map by
    ``g`` and permutes the filters of each block (``"rotations"``: rotated
    input -> rotated output, filter ``(b, g)`` taking the values of
    ``(b, g - 1)``). The kernel is built in ``call`` with ``keras.ops``
    (transpose and reverse) before one ordinary convolution; TFLite export
    folds it into one ``CONV_2D``.

    Args:
        filters: Output channels, a multiple of ``|G|``.
        kernel_size, strides, padding, dilation_rate, activation, use_bias,
            bias_initializer, bias_regularizer, activity_regularizer,
            bias_constraint: As in ``keras.layers.Conv2D`` (the bias has
            ``filters / |G|`` entries).
        data_format: ``"channels_last"`` only (``None``: the Keras config's).
        groups: Must be 1.
        kernel_initializer: Draws a full ``(kh, kw, cin, filters)`` kernel, as
            Conv2D does, and keeps every ``|G|``-th filter as the base.
        kernel_regularizer, kernel_constraint: Applied to the base filters.
        group: ``"rotations"`` (default), ``"flips"``, ``"flips2"`` or ``"d4"``.
        **kwargs: Base layer arguments.

    Raises:
        ValueError: ``filters`` not divisible by ``|G|``; a rotation group with
            a non-square kernel; an unknown ``group``; ``channels_first``;
            ``groups != 1``; a bad padding, size or stride.

    Example:
        >>> layer = TransferredConv2D(32, 3, padding="same", group="d4")
        >>> y = layer(np.zeros((1, 28, 28, 16), "float32"))
        >>> [tuple(w.shape) for w in layer.weights]  # 4 base filters
        [(3, 3, 16, 4), (4,)]

    References:
        Cohen and Welling, "Group Equivariant Convolutional Networks", ICML
        2016; Cheng et al., "A Survey of Model Compression and Acceleration
        for Deep Neural Networks", 2017 (transferred convolutional filters).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        strides: int | tuple[int, int] = (1, 1),
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate: int | tuple[int, int] = (1, 1),
        groups: int = 1,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        *,
        group: str = "rotations",
        **kwargs: Any,
    ) -> None:
        # Every check runs before the base Layer is initialised.
        self._group = filter_group(group)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters < 1:
            raise ValueError(f"filters must be a positive int, got {filters!r}")
        kernel_size = _pair(kernel_size, "kernel_size")
        reason = _check_fits(self._group, int(filters), kernel_size)
        if reason is not None:
            raise ValueError(reason)
        if groups != 1:
            raise ValueError(f"TransferredConv2D supports groups=1 only, got groups={groups!r}")
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        data_format = data_format or keras.config.image_data_format()
        if data_format != "channels_last":
            raise ValueError(
                f"data_format must be 'channels_last' (TransferredConv2D supports only it), "
                f"got {data_format!r}"
            )
        strides = _pair(strides, "strides")
        dilation_rate = _pair(dilation_rate, "dilation_rate")
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = int(filters)
        self.kernel_size = kernel_size
        self.group = self._group.name
        self.strides = strides
        self.padding = padding
        self.data_format = data_format
        self.dilation_rate = dilation_rate
        self.groups = 1
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)
        self._built_input_shape: tuple | None = None

    @property
    def group_size(self) -> int:
        """``|G|``: the number of filters made from each base filter."""
        return self._group.size

    @property
    def base_filters(self) -> int:
        """``filters / |G|``."""
        return self.filters // self._group.size

    def build(self, input_shape: tuple) -> None:
        cin = input_shape[-1]
        if cin is None:
            raise ValueError(f"{self.name}: the input channel dimension must be known")
        size = self._group.size

        def base_initializer(shape, dtype=None):
            full = self.kernel_initializer((*shape[:3], shape[3] * size), dtype=dtype)
            return full[..., ::size]

        self.base_kernel = self.add_weight(
            name="base_kernel",
            shape=(*self.kernel_size, int(cin), self.base_filters),
            initializer=base_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = (
            self.add_weight(
                name="bias",
                shape=(self.base_filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
            if self.use_bias
            else None
        )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: int(cin)})
        self._built_input_shape = tuple(input_shape)

    def transferred_kernel(self) -> Any:
        """The full ``(kh, kw, cin, filters)`` kernel as a backend tensor."""
        base = self.base_kernel
        parts = [_ops_transform(base, k, f) for k, f in self._group.elements]
        stacked = ops.stack(parts, axis=-1)  # (kh, kw, cin, nb, |G|)
        return ops.reshape(stacked, (*self.kernel_size, -1, self.filters))

    def call(self, inputs: Any) -> Any:
        x = ops.conv(
            inputs,
            self.transferred_kernel(),
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )
        if self.bias is not None:
            x = ops.add(x, ops.repeat(self.bias, self._group.size))
        return self.activation(x) if self.activation is not None else x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        out: list[int | None] = []
        for size, k, s, d in zip(
            input_shape[1:3], self.kernel_size, self.strides, self.dilation_rate
        ):
            if size is None:
                out.append(None)
            elif self.padding == "same":
                out.append(-(-size // s))
            else:
                out.append((size - d * (k - 1) - 1) // s + 1)
        return (input_shape[0], *out, self.filters)

    # --- weights from a trained kernel -------------------------------------
    def set_kernel(self, kernel: Any, bias: Any = None) -> float:
        """Sets the base filters to the least-squares projection of a Conv2D kernel.

        Args:
            kernel: A ``(kh, kw, cin, filters)`` kernel.
            bias: Optional ``(filters,)`` bias; each base filter gets the mean
                of its block's biases (the least-squares shared bias).

        Returns:
            The relative error ``||W - W_G||_F / ||W||_F`` of the projected kernel.

        Raises:
            ValueError: If the layer is not built or the shape differs.
        """
        if not self.built:
            raise ValueError(f"{self.name}: build the layer before set_kernel")
        w = _numpy(kernel).astype(np.float64)
        expected = (*self.base_kernel.shape[:3], self.filters)
        if w.shape != expected:
            raise ValueError(f"kernel must have shape {expected}, got {w.shape}")
        base = project_kernel(w, self._group)
        self.base_kernel.assign(base.astype(self.base_kernel.dtype))
        if bias is not None and self.bias is not None:
            b = _numpy(bias).astype(np.float64).reshape(self.base_filters, self._group.size)
            self.bias.assign(b.mean(axis=1).astype(self.bias.dtype))
        error = np.linalg.norm(w - transfer_kernel(base, self._group))
        return float(error / max(np.linalg.norm(w), 1e-30))

    def effective_kernel(self) -> np.ndarray:
        """The ``(kh, kw, cin, filters)`` kernel the layer convolves with, as NumPy."""
        return transfer_kernel(_numpy(self.base_kernel), self._group)

    def compression_stats(self) -> dict[str, Any]:
        """Stored parameters and MACs per example (of the full convolution), for ``tfc.summary``."""
        if not self.built:
            return {}
        stats: dict[str, Any] = {"params": sum(math.prod(v.shape) for v in self.weights)}
        shape = self.compute_output_shape(self._built_input_shape)
        if all(d is not None for d in shape[1:3]):
            full = math.prod(self.base_kernel.shape[:3]) * self.filters
            stats["macs"] = full * shape[1] * shape[2]
        return stats

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for key in ("filters", "kernel_size", "strides", "padding", "data_format",
                    "dilation_rate", "groups", "use_bias", "group"):  # fmt: skip
            config[key] = getattr(self, key)
        for key, serialize in _SERIALIZERS.items():
            config[key] = serialize(getattr(self, key))
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TransferredConv2D:
        config = dict(config)
        for key in ("kernel_size", "strides", "dilation_rate"):
            if key in config:
                config[key] = tuple(config[key])
        return cls(**config)

"""LowRankConv2D: a Conv2D kernel stored and applied as a chain of smaller convolutions."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress.core import axis_conv
from tfcompress.lowrank.conv_decompositions import CONV_DECOMPOSITIONS, Stage, conv_decomposition

__all__ = ["CONV_DECOMPOSITIONS", "LowRankConv2D"]


def _numpy(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _pair(value: Any, argument: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value), int(value))
    try:
        pair = tuple(int(v) for v in value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or any(v < 1 for v in pair):
        raise ValueError(f"{argument} must be a positive int or a pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


@keras.saving.register_keras_serializable(package="tfcompress")
class LowRankConv2D(keras.layers.Layer):
    """A Conv2D whose kernel is stored and applied as a chain of smaller convolutions.

    Four decompositions of the ``(kh, kw, cin, filters)`` kernel:

    * ``"channel"``: a ``kh x kw`` convolution to ``rank`` channels, then a
      ``1 x 1`` convolution to ``filters`` (SVD of the kernel viewed as a
      ``(kh*kw*cin, filters)`` matrix). ``rank * (kh*kw*cin + filters)`` weights.
    * ``"spatial"``: a ``kh x 1`` convolution to ``rank`` channels, then a
      ``1 x kw`` convolution to ``filters`` (Jaderberg et al.'s scheme 2; SVD of
      the kernel viewed as a ``(kh*cin, kw*filters)`` matrix).
      ``rank * (kh*cin + kw*filters)`` weights.
    * ``"tucker2"``: ``1 x 1`` to ``rank_in``, a ``kh x kw`` core to ``rank_out``,
      ``1 x 1`` to ``filters`` (Tucker-2 over the channel modes).
      ``rank`` is an int (both) or a pair ``(rank_in, rank_out)``.
    * ``"cp"``: ``1 x 1`` to ``rank`` channels, a depthwise ``kh x 1``, a
      depthwise ``1 x kw``, ``1 x 1`` to ``filters`` (Lebedev et al.'s CP
      decomposition ``K[h, w, s, t] ~= sum_r Kx[h, r] Ky[w, r] Ks[s, r] Kt[t, r]``
      by CP-ALS). ``rank * (cin + kh + kw + filters)`` weights.

    Strides, padding and dilation apply to the spatial factors, so a
    factorization at full rank gives exactly the outputs of the Conv2D it came
    from. The bias and activation follow the last factor.

    Args:
        filters: Output channels.
        kernel_size: As in ``keras.layers.Conv2D``.
        rank: Inner rank (``"tucker2"``: int or ``(rank_in, rank_out)``).
        decomposition: ``"channel"``, ``"spatial"``, ``"tucker2"`` or ``"cp"`` (or a
            :class:`~tfcompress.lowrank.conv_decompositions.ConvDecomposition`).
        strides, padding, data_format, dilation_rate: As in Conv2D.
        groups: Must be 1 (grouped convolutions are not factorized).
        activation, use_bias, bias_initializer, bias_regularizer,
            activity_regularizer, bias_constraint: As in Conv2D.
        kernel_initializer, kernel_regularizer, kernel_constraint: Applied to
            each factor.
        **kwargs: Base layer arguments.

    Returns:
        The Conv2D's output tensor.

    Raises:
        ValueError: ``rank < 1``, an unknown ``decomposition``, ``groups != 1``,
            or a rank at or above the factorized matrix's smaller side (at build;
            ``"cp"``: above ``kh*kw*cin*filters / max(kh, kw, cin, filters)``).

    Example:
        >>> layer = LowRankConv2D(64, 3, rank=16, padding="same")
        >>> y = layer(np.zeros((1, 8, 8, 32), "float32"))
        >>> layer.set_kernel(trained_conv.kernel, trained_conv.bias)

    References:
        Jaderberg, Vedaldi and Zisserman, "Speeding up Convolutional Neural
        Networks with Low Rank Expansions", BMVC 2014; Zhang et al.,
        "Accelerating Very Deep Convolutional Networks for Classification and
        Detection", TPAMI 2016 (channel); Kim et al., "Compression of Deep
        Convolutional Neural Networks for Fast and Low Power Mobile
        Applications", ICLR 2016 (Tucker-2); Lebedev, Ganin, Rakhuba,
        Oseledets and Lempitsky, "Speeding-up Convolutional Neural Networks
        Using Fine-tuned CP-Decomposition", ICLR 2015 (CP).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        rank: int | tuple[int, int],
        decomposition: str = "channel",
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
        **kwargs: Any,
    ) -> None:
        # The name stays in the config; every decision below asks the object.
        self._decomposition = conv_decomposition(decomposition)
        if groups != 1:
            raise ValueError(f"LowRankConv2D supports groups=1 only, got groups={groups!r}")
        self.rank: int | tuple[int, int] = self._decomposition.normalize_rank(rank)
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters < 1:
            raise ValueError(f"filters must be a positive int, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.decomposition = self._decomposition.name
        self.strides = _pair(strides, "strides")
        self.padding = padding
        data_format = data_format or keras.config.image_data_format()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(
                f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}"
            )
        self.data_format = data_format
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.groups = 1
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)
        self._output_spatial: int | None = None

    # --- structure -------------------------------------------------------
    @property
    def ranks(self) -> tuple[int, int]:
        """``(rank_in, rank_out)`` for Tucker-2, ``(rank, rank)`` otherwise."""
        return self.rank if isinstance(self.rank, tuple) else (self.rank, self.rank)

    def _kernel_shape(self, cin: int) -> tuple[int, int, int, int]:
        return (*self.kernel_size, cin, self.filters)

    def stages(self, cin: int | None = None) -> list[Stage]:
        """The :class:`Stage` (weight name, kernel shape, strides, dilation, depthwise) of each
        convolution, in order.

        Args:
            cin: Input channels (default: those the layer was built with).
        """
        cin = self._cin if cin is None else cin
        return self._decomposition.stages(
            self._kernel_shape(cin), self.rank, self.strides, self.dilation_rate
        )

    def build(self, input_shape: tuple) -> None:
        axis = -1 if self.data_format == "channels_last" else 1
        cin = input_shape[axis]
        if cin is None:
            raise ValueError(f"{self.name}: the input channel dimension must be known")
        self._decomposition.check_rank(self.rank, self._kernel_shape(cin))
        self._kernels = []
        for stage in self.stages(cin):
            self._kernels.append(
                self.add_weight(
                    name=stage.name,
                    shape=stage.shape,
                    initializer=self.kernel_initializer,
                    regularizer=self.kernel_regularizer,
                    constraint=self.kernel_constraint,
                )
            )
        self.bias = (
            self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
            if self.use_bias
            else None
        )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={axis: cin})
        self._built_input_shape = tuple(input_shape)

    def call(self, inputs: Any) -> Any:
        x = inputs
        for kernel, stage in zip(self._kernels, self.stages()):
            # Unequal strides (CP's kh x 1 and 1 x kw stages) go through axis_conv: TensorFlow's
            # CPU depthwise kernel rejects them unless oneDNN is on.
            conv = axis_conv.depthwise_conv if stage.depthwise else ops.conv
            x = conv(
                x,
                kernel,
                strides=stage.strides,
                padding=self.padding,
                data_format=self.data_format,
                dilation_rate=stage.dilation,
            )
        if self.bias is not None:
            bias = self.bias
            if self.data_format == "channels_first":
                bias = ops.reshape(bias, (self.filters, 1, 1))
            x = ops.add(x, bias)
        return self.activation(x) if self.activation is not None else x

    @property
    def _cin(self) -> int:
        return int(self._kernels[0].shape[2])

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return _conv_output_shape(
            tuple(input_shape),
            self.filters,
            self.kernel_size,
            self.strides,
            self.dilation_rate,
            self.padding,
            self.data_format,
        )

    # --- weights from a trained kernel -----------------------------------
    def set_kernel(self, kernel: Any, bias: Any = None) -> float:
        """Sets the factors from a ``(kh, kw, cin, filters)`` Conv2D kernel.

        ``"channel"`` and ``"spatial"`` use the truncated SVD of the matching
        matrix view (the best factors in the Frobenius norm); ``"tucker2"``
        uses the truncated HOSVD refined by a few HOOI sweeps; ``"cp"`` runs
        CP-ALS from the HOSVD (deterministic).

        Args:
            kernel: The Conv2D kernel.
            bias: Optional ``(filters,)`` bias.

        Returns:
            The squared Frobenius error of the effective kernel.

        Raises:
            ValueError: If the layer is not built or the shape differs.
        """
        if not self.built:
            raise ValueError(f"{self.name}: build the layer before set_kernel")
        w = _numpy(kernel).astype(np.float64)
        kh, kw = self.kernel_size
        expected = (kh, kw, self._cin, self.filters)
        if w.shape != expected:
            raise ValueError(f"kernel must have shape {expected}, got {w.shape}")
        for variable, value in zip(self._kernels, self._decomposition.factors(w, self.rank)):
            variable.assign(value.astype(np.float32))
        if bias is not None and self.bias is not None:
            self.bias.assign(_numpy(bias).astype(self.bias.dtype))
        return float(np.sum((w - self.effective_kernel()) ** 2))

    def effective_kernel(self) -> np.ndarray:
        """The ``(kh, kw, cin, filters)`` kernel the factors compute, as NumPy."""
        return self._decomposition.compose([_numpy(k) for k in self._kernels])

    def compression_stats(self) -> dict[str, Any]:
        """Parameters and MACs per example of the factor chain, for ``tfc.summary``."""
        if not self.built:
            return {}
        sizes = [math.prod(k.shape) for k in self._kernels]
        stats: dict[str, Any] = {"params": sum(sizes) + (self.filters if self.use_bias else 0)}
        shape = self._built_input_shape
        if all(d is not None for d in shape[1:]):
            # Each stage's MACs: its kernel size times its output positions (depthwise too).
            macs = 0
            for size, stage in zip(sizes, self.stages()):
                shape = _conv_output_shape(
                    shape,
                    stage.filters,
                    stage.shape[:2],
                    stage.strides,
                    stage.dilation,
                    self.padding,
                    self.data_format,
                )
                spatial = shape[1:3] if self.data_format == "channels_last" else shape[2:4]
                macs += size * math.prod(spatial)
            stats["macs"] = macs
        return stats

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "rank": self.rank,
                "decomposition": self.decomposition,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
                "groups": self.groups,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LowRankConv2D:
        config = dict(config)
        for key in ("kernel_size", "strides", "dilation_rate"):
            config[key] = tuple(config[key])
        if isinstance(config["rank"], list):
            config["rank"] = tuple(config["rank"])
        return cls(**config)


def _conv_output_shape(
    shape: tuple, channels: int, kernel_size, strides, dilation, padding: str, data_format: str
) -> tuple:
    last = data_format == "channels_last"
    spatial = shape[1:3] if last else shape[2:4]
    out: list[int | None] = []
    for size, k, s, d in zip(spatial, kernel_size, strides, dilation):
        if size is None:
            out.append(None)
        elif padding == "same":
            out.append(-(-size // s))
        else:
            out.append((size - d * (k - 1) - 1) // s + 1)
    return (shape[0], *out, channels) if last else (shape[0], channels, *out)

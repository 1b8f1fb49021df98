"""Binary and ternary Dense / Conv2D / DepthwiseConv2D layers.

Each layer is the Keras layer it replaces (same arguments, same defaults)
plus three arguments:

* ``kernel_quantizer``: how the latent float kernel becomes binary/ternary
  in the forward pass (``"ste_sign"``, ``"magnitude_aware_sign"``,
  ``"ste_tern"``, ``"ttq"``, ... or any quantizer of
  :mod:`tfcompress.quantizers`);
* ``input_quantizer``: how the inputs are binarized (``None`` keeps them);
* ``latent_clip``: latent weights are clipped to ``[-latent_clip,
  latent_clip]`` after every optimizer step (through the kernel's
  constraint), so they stay where the straight-through gradient flows.

Quantizer state (TTQ's learned scales, or the range of any other stateful
quantizer) lives on the layer, created, called, saved and restored through
:class:`tfcompress.quantization.layer_base.QuantizerStateMixin` as in the
``Quant*`` layers.

The latent kernel is an ordinary float variable (training needs it). What the
layer *stores* is the quantized kernel: :meth:`binary_kernel` gives its
``{-1, 0, +1}`` values and per-channel scales, :meth:`packed_kernel` the
1-bit (2-bit ternary) packed form. These are the inference hooks for packed
storage (:mod:`tfcompress.packing`) and for XNOR-popcount kernels.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress.binary.packed import PackedInferenceMixin
from tfcompress.quantization import registry
from tfcompress.quantization.base import Quantizer
from tfcompress.quantization.layer_base import QuantizerStateMixin

__all__ = [
    "BinaryConv2D",
    "BinaryDense",
    "BinaryDepthwiseConv2D",
    "WeightClip",
    "unipolar_inputs",
]

_UNIPOLAR = contextvars.ContextVar("tfcompress_binary_unipolar", default=False)


@contextlib.contextmanager
def unipolar_inputs() -> Iterator[None]:
    """Traces binary layers with ``{0, 1}`` inputs instead of ``{-1, +1}`` (TFLite export).

    Inside this context a layer whose inputs are binarized to +-1 computes
    ``x @ W`` as ``2 * (b @ W) - 1 @ W`` with ``b = (x + 1) / 2`` in ``{0, 1}``
    (the second term is a constant the converter folds). The result is the
    same up to float rounding, but LiteRT's hybrid int8 kernels quantize a
    ``{0, 1}`` input exactly (range [0, 1], zero point -128), whereas they map
    +-1 asymmetrically to -0.9961/+1.0039 and can flip signs downstream.
    Wrap an export in it to get a file whose predictions equal the Keras
    model's; the Keras model's own forward pass never changes. The cost: the
    folded constant of a "same"-padded convolution is a float map, so the
    file is ~3.2x rather than ~3.7x smaller than float on the digits CNN.

    Example:
        >>> with tfc.layers.unipolar_inputs():
        ...     report = tfc.tflite_export.export(binary_model, "bnn.tflite",
        ...                                       quantization="dynamic")
    """
    token = _UNIPOLAR.set(True)
    try:
        yield
    finally:
        _UNIPOLAR.reset(token)


@keras.saving.register_keras_serializable(package="tfcompress")
class WeightClip(keras.constraints.Constraint):
    """Clips weights to ``[-clip_value, clip_value]``.

    Args:
        clip_value: The bound (> 0).

    Raises:
        ValueError: If ``clip_value <= 0``.

    Example:
        >>> keras.layers.Dense(8, kernel_constraint=WeightClip(1.0))
    """

    def __init__(self, clip_value: float = 1.0) -> None:
        if not (isinstance(clip_value, (int, float)) and clip_value > 0):
            raise ValueError(f"clip_value must be a number > 0, got {clip_value!r}")
        self.clip_value = float(clip_value)

    def __call__(self, w):
        return ops.clip(w, -self.clip_value, self.clip_value)

    def get_config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value}


class _Chain(keras.constraints.Constraint):
    """The user's constraint, then the latent clip (never serialized itself)."""

    def __init__(self, first, second) -> None:
        self.first, self.second = first, second

    def __call__(self, w):
        return self.second(self.first(w) if self.first is not None else w)


def _valid_taps(size: int, kernel: int, stride: int, dilation: int, padding: str) -> np.ndarray:
    """``(outputs, kernel)`` bools: which kernel taps of each output read real input."""
    span = (kernel - 1) * dilation + 1
    if padding == "same":
        out = -(-size // stride)
        pad = max((out - 1) * stride + span - size, 0) // 2
    else:
        out, pad = (size - span) // stride + 1, 0
    pos = np.arange(out)[:, None] * stride - pad + np.arange(kernel)[None, :] * dilation
    return (pos >= 0) & (pos < size)


class _BinaryMixin(QuantizerStateMixin):
    """What the binary layers share: quantizers, clipping, export hooks, stats."""

    _kernel_attr = "kernel"

    def _init_binary(self, kernel_quantizer, input_quantizer, latent_clip) -> None:
        self.kernel_quantizer = registry.get(kernel_quantizer, "kernel_quantizer")
        self.input_quantizer = registry.get(input_quantizer, "input_quantizer")
        if latent_clip is not None and not (
            isinstance(latent_clip, (int, float)) and latent_clip > 0
        ):
            raise ValueError(f"latent_clip must be a number > 0 or None, got {latent_clip!r}")
        self.latent_clip = None if latent_clip is None else float(latent_clip)

    def _chain_constraint(self, user_constraint):
        user_constraint = keras.constraints.get(user_constraint)
        self._user_kernel_constraint = user_constraint
        if self.latent_clip is None:
            return user_constraint
        return _Chain(user_constraint, WeightClip(self.latent_clip))

    def _build_quantizers(self, input_shape) -> None:
        self._build_quantizer_state("input", input_shape)
        kernel = self._kernel_view(self._latent_kernel())
        self._build_quantizer_state("kernel", kernel.shape, values=kernel)
        self._mark_binary_kernel()

    def _mark_binary_kernel(self) -> None:
        # Tells Bop (tfcompress.optimizers) which variables are +-1 weights.
        q = self.kernel_quantizer
        binary = q is not None and q.pack_kind == "binary" and not q.scaled
        self._latent_kernel()._tfcompress_binary = binary

    def _latent_kernel(self):
        return getattr(self, self._kernel_attr)

    def _kernel_view(self, kernel):
        """The kernel as its quantizer sees it (one scale per column of the last axis)."""
        return kernel

    def _kernel_from_view(self, view, kernel_shape):
        return view

    def _quantize_kernel(self, kernel, training=False):
        if self.kernel_quantizer is None:
            return kernel
        view = self._quantize("kernel", self._kernel_view(kernel), training)
        return self._kernel_from_view(view, tuple(kernel.shape))

    def _unipolar(self, inputs) -> bool:
        """True when tracing for export with +-1 inputs of a fully known shape."""
        q = self.input_quantizer
        return (
            _UNIPOLAR.get()
            and q is not None
            and q.pack_kind == "binary"
            and not q.scaled
            and all(d is not None for d in inputs.shape[1:])
        )

    def _bipolar_product(self, op, inputs, kernel, training=False):
        """``op(sign inputs, kernel)`` computed as ``2 op(b, kernel) - op(1, kernel)``."""
        if not self._unipolar(inputs):
            return op(self._quantize("input", inputs, training), kernel)
        unipolar = (self._quantize("input", inputs, training) + 1.0) * 0.5
        return op(unipolar, kernel) * 2.0 - self._ones_product(op, inputs, kernel)

    def _ones_product(self, op, inputs, kernel):
        # op(ones, kernel) as a product of constants, which the converter folds
        # (it keeps a CONV_2D of constants as a run-time op).
        if kernel.ndim == 2:
            return ops.sum(kernel, axis=0)
        if self.data_format != "channels_last" or getattr(self, "groups", 1) != 1:
            return op(ops.ones((1, *inputs.shape[1:]), dtype=kernel.dtype), kernel)
        kh, kw, cin, mult = kernel.shape
        taps_h = _valid_taps(inputs.shape[1], kh, *self._tap_args(0))
        taps_w = _valid_taps(inputs.shape[2], kw, *self._tap_args(1))
        mask = (taps_h[:, None, :, None] & taps_w[None, :, None, :]).astype("float32")
        oh, ow = mask.shape[:2]
        # Depthwise: one column per (input channel, multiplier); else sum over inputs.
        taps = ops.reshape(kernel, (kh * kw, cin * mult)) if self._depthwise else None
        if taps is None:
            taps = ops.reshape(ops.sum(kernel, axis=2), (kh * kw, mult))
        product = ops.matmul(ops.convert_to_tensor(mask.reshape(oh * ow, kh * kw)), taps)
        return ops.reshape(product, (1, oh, ow, -1))

    def _tap_args(self, axis: int) -> tuple[int, int, str]:
        return self.strides[axis], self.dilation_rate[axis], self.padding

    def _binary_config(self, config: dict[str, Any], constraint_key: str) -> dict[str, Any]:
        config[constraint_key] = keras.constraints.serialize(self._user_kernel_constraint)
        config["kernel_quantizer"] = registry.serialize(self.kernel_quantizer)
        config["input_quantizer"] = registry.serialize(self.input_quantizer)
        config["latent_clip"] = self.latent_clip
        return config

    # ---- inference hooks (packed storage, custom kernels) ----

    def quantized_kernel(self) -> np.ndarray:
        """The kernel as the forward pass uses it (binary/ternary values times scales)."""
        kernel = self._quantize_kernel(ops.convert_to_tensor(self._latent_kernel()))
        return np.asarray(ops.convert_to_numpy(kernel), dtype=np.float32)

    def binary_kernel(self) -> tuple[np.ndarray, np.ndarray]:
        """``(values, scales)``: int8 values in {-1, +1} ({-1, 0, +1} ternary) and float32 scales.

        ``values * scales`` equals :meth:`quantized_kernel` exactly. Scales
        have one entry per output channel (last kernel axis).

        Raises:
            ValueError: If the layer's kernel quantizer is not binary/ternary.
        """
        from tfcompress.binary.store import split_scales

        kind = self.pack_kind
        if kind is None:
            raise ValueError(
                f"layer {self.name!r}: kernel_quantizer={self.kernel_quantizer!r} does not "
                "give a binary or ternary kernel"
            )
        return split_scales(self.quantized_kernel(), kind, name=self.name)

    def packed_kernel(self):
        """The kernel packed 1 bit (2 bits ternary) per weight, with its scales.

        Returns:
            A :class:`tfcompress.packing.PackedKernel`.
        """
        from tfcompress.binary.store import pack_kernel

        return pack_kernel(self.quantized_kernel(), self.pack_kind, name=self.name)

    @property
    def pack_kind(self) -> str | None:
        """``"binary"``, ``"ternary"`` or ``None`` (the kernel cannot be packed)."""
        q = self.kernel_quantizer
        return None if q is None else q.pack_kind

    def compression_stats(self) -> dict[str, Any]:
        """Bits per kernel weight as stored and the layer's stored bytes (summary hook)."""
        kernel = self._latent_kernel()
        size = int(np.prod(kernel.shape))
        q = self.kernel_quantizer
        bits = 32 if q is None else q.bits
        channels = int(kernel.shape[-1]) * (int(kernel.shape[-2]) if self._depthwise else 1)
        # A per-channel float32 scale, unless the quantizer keeps it as variables (TTQ), which
        # `others` counts; other quantizer state (IR-Net's progress) is counted there too.
        scale_variables = any(v.name.endswith("_scale") for v in self.weights)
        scale_bytes = 4 * channels if q is not None and q.scaled and not scale_variables else 0
        others = sum(
            int(np.prod(v.shape)) * 4 for v in self.weights if v is not self._latent_kernel()
        )
        kernel_bytes = -(-size * bits // 8)
        return {"bits_per_weight": float(bits), "bytes": float(kernel_bytes + scale_bytes + others)}

    _depthwise = False


def _bias_for(layer, channels: int):
    """The layer's bias shaped to broadcast over a conv output."""
    if layer.data_format == "channels_last":
        shape = (1,) * (layer.rank + 1) + (channels,)
    else:
        shape = (1, channels) + (1,) * layer.rank
    return ops.reshape(layer.bias, shape)


@keras.saving.register_keras_serializable(package="tfcompress")
class BinaryDense(PackedInferenceMixin, _BinaryMixin, keras.layers.Dense):
    """``keras.layers.Dense`` with a binary (or ternary) kernel and optionally binary inputs.

    Args:
        units, activation, use_bias, kernel_initializer, bias_initializer,
        kernel_regularizer, bias_regularizer, activity_regularizer,
        kernel_constraint, bias_constraint, lora_rank, lora_alpha,
        quantization_config: As in ``keras.layers.Dense``.
        kernel_quantizer: Quantizer of the latent kernel: a preset name
            (``tfcompress.quantizers.PRESETS``), a config dict, a quantizer
            object, or None (float kernel).
        input_quantizer: Quantizer of the inputs (None keeps them float).
        latent_clip: Latent weights are clipped to ``[-latent_clip,
            latent_clip]`` after each optimizer step (None: no clipping).
        inference: ``"default"``, or ``"packed"``: XNOR-popcount inference on
            the packed kernel when kernel and inputs are binary (TensorFlow
            only; see :meth:`freeze` and :mod:`tfcompress.binary.packed`).

    Returns:
        ``activation(input_quantizer(x) @ kernel_quantizer(kernel) + bias)``.

    Raises:
        ValueError: For an unknown quantizer name, a bad ``latent_clip`` or
            ``inference``.
        RuntimeError: ``inference="packed"`` on a backend other than TensorFlow.

    Example:
        >>> layer = BinaryDense(64, kernel_quantizer="ste_sign", input_quantizer="ste_sign")
        >>> layer = BinaryDense(64, kernel_quantizer="ste_tern", input_quantizer=None)

    References:
        Courbariaux et al., "Binarized Neural Networks", 2016.
    """

    def __init__(
        self,
        units: int,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        lora_rank=None,
        lora_alpha=None,
        quantization_config=None,
        *,
        kernel_quantizer: str | dict | Quantizer | None = "ste_sign",
        input_quantizer: str | dict | Quantizer | None = "ste_sign",
        latent_clip: float | None = 1.0,
        inference: str = "default",
        **kwargs,
    ) -> None:
        self._init_binary(kernel_quantizer, input_quantizer, latent_clip)
        self._init_inference(inference)
        super().__init__(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=self._chain_constraint(kernel_constraint),
            bias_constraint=bias_constraint,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            quantization_config=quantization_config,
            **kwargs,
        )

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self._build_quantizers(input_shape)
        self._repack()

    def call(self, inputs, training=None):
        if self._packed is not None:
            return self._packed_forward(inputs, training)
        kernel = self._quantize_kernel(self.kernel, training)
        x = self._bipolar_product(ops.matmul, inputs, kernel, training)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def _packed_op(self, x, bias):
        from tfcompress.kernels import tf as tops

        return tops.binary_dense_inference(
            x, self._packed.kernel, self._packed.scale, bias, use_kernels=self._use_kernels
        )

    def get_config(self) -> dict[str, Any]:
        config = self._binary_config(super().get_config(), "kernel_constraint")
        return self._inference_config(config)


@keras.saving.register_keras_serializable(package="tfcompress")
class BinaryConv2D(PackedInferenceMixin, _BinaryMixin, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with a binary (or ternary) kernel and optionally binary inputs.

    Args:
        filters, kernel_size, strides, padding, data_format, dilation_rate,
        groups, activation, use_bias, kernel_initializer, bias_initializer,
        kernel_regularizer, bias_regularizer, activity_regularizer,
        kernel_constraint, bias_constraint: As in ``keras.layers.Conv2D``.
        kernel_quantizer: Quantizer of the latent kernel: a preset name
            (``tfcompress.quantizers.PRESETS``), a config dict, a quantizer
            object, or None (float kernel).
        input_quantizer: Quantizer of the inputs (None keeps them float).
            With ``padding="same"`` the padding is 0, a third value next to
            the binary +-1 (as in larq's default).
        latent_clip: Latent weights are clipped to ``[-latent_clip,
            latent_clip]`` after each optimizer step (None: no clipping).
        inference: ``"default"``, or ``"packed"``: XNOR-popcount inference on
            the packed kernel when kernel and inputs are binary (TensorFlow
            only; see :meth:`freeze` and :mod:`tfcompress.binary.packed`).

    Returns:
        ``activation(conv(input_quantizer(x), kernel_quantizer(kernel)) + bias)``.

    Raises:
        ValueError: For an unknown quantizer name, a bad ``latent_clip`` or
            ``inference``.
        RuntimeError: ``inference="packed"`` on a backend other than TensorFlow.

    Example:
        >>> layer = BinaryConv2D(64, 3, padding="same", use_bias=False)

    References:
        Rastegari et al., "XNOR-Net", ECCV 2016.
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate=(1, 1),
        groups: int = 1,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        *,
        kernel_quantizer: str | dict | Quantizer | None = "ste_sign",
        input_quantizer: str | dict | Quantizer | None = "ste_sign",
        latent_clip: float | None = 1.0,
        inference: str = "default",
        **kwargs,
    ) -> None:
        self._init_binary(kernel_quantizer, input_quantizer, latent_clip)
        self._init_inference(inference)
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            groups=groups,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=self._chain_constraint(kernel_constraint),
            bias_constraint=bias_constraint,
            **kwargs,
        )

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self._build_quantizers(input_shape)
        self._repack()

    def call(self, inputs, training=None):
        if self._packed is not None:
            return self._packed_forward(inputs, training)
        kernel = self._quantize_kernel(self.kernel, training)
        outputs = self._bipolar_product(super().convolution_op, inputs, kernel, training)
        if self.use_bias:
            outputs = ops.add(outputs, _bias_for(self, self.filters))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def _conv_unsupported_reason(self) -> str | None:
        if self.data_format != "channels_last":
            return f"data_format={self.data_format!r} (the packed conv is NHWC only)"
        if self.groups != 1:
            return f"groups={self.groups} (the packed conv has no grouped form)"
        return None

    def _packed_op(self, x, bias):
        from tfcompress.kernels import tf as tops

        return tops.binary_conv2d_inference(
            x,
            self._packed.kernel,
            self._packed.scale,
            bias,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            use_kernels=self._use_kernels,
        )

    def get_config(self) -> dict[str, Any]:
        config = self._binary_config(super().get_config(), "kernel_constraint")
        return self._inference_config(config)


@keras.saving.register_keras_serializable(package="tfcompress")
class BinaryDepthwiseConv2D(_BinaryMixin, keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with a binary (or ternary) kernel.

    Scales are per depthwise channel (input channel x multiplier).

    Args:
        kernel_size, strides, padding, depth_multiplier, data_format,
        dilation_rate, activation, use_bias, depthwise_initializer,
        bias_initializer, depthwise_regularizer, bias_regularizer,
        activity_regularizer, depthwise_constraint, bias_constraint: As in
        ``keras.layers.DepthwiseConv2D``.
        kernel_quantizer: Quantizer of the latent kernel (see BinaryConv2D).
        input_quantizer: Quantizer of the inputs (None keeps them float).
        latent_clip: Latent weight clip (None: no clipping).

    Returns:
        The depthwise convolution of the quantized inputs and kernel.

    Raises:
        ValueError: For an unknown quantizer name or a bad ``latent_clip``.

    Example:
        >>> layer = BinaryDepthwiseConv2D(3, padding="same", kernel_quantizer="magnitude_aware_sign")
    """

    _depthwise = True

    def __init__(
        self,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        depth_multiplier: int = 1,
        data_format: str | None = None,
        dilation_rate=(1, 1),
        activation=None,
        use_bias: bool = True,
        depthwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        bias_constraint=None,
        *,
        kernel_quantizer: str | dict | Quantizer | None = "ste_sign",
        input_quantizer: str | dict | Quantizer | None = "ste_sign",
        latent_clip: float | None = 1.0,
        **kwargs,
    ) -> None:
        self._init_binary(kernel_quantizer, input_quantizer, latent_clip)
        super().__init__(
            kernel_size,
            strides=strides,
            padding=padding,
            depth_multiplier=depth_multiplier,
            data_format=data_format,
            dilation_rate=dilation_rate,
            activation=activation,
            use_bias=use_bias,
            depthwise_initializer=depthwise_initializer,
            bias_initializer=bias_initializer,
            depthwise_regularizer=depthwise_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            depthwise_constraint=self._chain_constraint(depthwise_constraint),
            bias_constraint=bias_constraint,
            **kwargs,
        )

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self._build_quantizers(input_shape)

    def _kernel_view(self, kernel):
        # One scale per (input channel, multiplier): quantize a (kh, kw, 1, C*M) view.
        kh, kw, cin, mult = kernel.shape
        return ops.reshape(kernel, (kh, kw, 1, cin * mult))

    def _kernel_from_view(self, view, kernel_shape):
        return ops.reshape(view, kernel_shape)

    def quantized_kernel(self) -> np.ndarray:
        """The kernel as used, reshaped to ``(kh, kw, 1, in * multiplier)`` (one scale per column)."""
        kernel = super().quantized_kernel()
        kh, kw, cin, mult = kernel.shape
        return kernel.reshape(kh, kw, 1, cin * mult)

    def call(self, inputs, training=None):
        def conv(x, kernel):
            return ops.depthwise_conv(
                x,
                kernel,
                strides=self.strides,
                padding=self.padding,
                dilation_rate=self.dilation_rate,
                data_format=self.data_format,
            )

        kernel = self._quantize_kernel(self.kernel, training)
        outputs = self._bipolar_product(conv, inputs, kernel, training)
        if self.use_bias:
            channels = self.depth_multiplier * self._get_input_channel(inputs.shape)
            outputs = ops.add(outputs, _bias_for(self, channels))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def get_config(self) -> dict[str, Any]:
        return self._binary_config(super().get_config(), "depthwise_constraint")

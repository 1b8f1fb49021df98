"""Packed XNOR-popcount inference for ``BinaryDense`` and ``BinaryConv2D``.

A binary layer whose kernel *and* inputs are binary computes
``(sign(x) . sign(W)) * scale + bias``. In the ``"packed"`` inference mode the
layer packs ``sign(W)`` once into 32-bit words and every call runs the
compiled XNOR-popcount op of :mod:`tfcompress.ops.tf` (or its pure-TF
fallback, identical results) instead of a float matmul/convolution.

The mode is ordinary layer state, so it serializes: ``layer.freeze()`` (or
:func:`freeze_binary` for a whole model) switches it on, ``layer.unfreeze()``
off, and ``BinaryDense(..., inference="packed")`` builds a layer already in
it. The packed kernel is recomputed when the layer is built, when weights are
loaded (``.keras`` files, ``set_weights``) and on every ``freeze()``; a frozen
layer refuses ``training=True`` calls, because the packed ops have no
gradient and the packed copy would go stale as the weights train.

A layer whose inputs are not binary (``input_quantizer`` is not a sign
quantizer), whose kernel is not binary (ternary, DoReFa, float), or whose
convolution the op does not cover (``channels_first``, ``groups > 1``) keeps
its normal path in the ``"packed"`` mode; ``layer.packed_unsupported_reason``
says why. TensorFlow backend only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress.core.backend import require_tensorflow_backend
from tfcompress.quantization import binary as binary_quantizers
from tfcompress.quantization.irnet import IRNetSign

__all__ = ["INFERENCE_MODES", "freeze_binary", "unfreeze_binary"]

INFERENCE_MODES = ("default", "packed")
# Quantizers whose forward pass is exactly sign(x) with sign(0) = +1 (the pack op's convention).
_SIGN_QUANTIZERS = (
    binary_quantizers.SteSign,
    binary_quantizers.ApproxSign,
    binary_quantizers.SwishSign,
    IRNetSign,
)
_BITWIDTH = 32


@dataclasses.dataclass(frozen=True)
class _Packed:
    kernel: Any  # int32 words, layout of pack_dense_kernel / pack_conv2d_kernel
    scale: Any  # float32 per output channel, or None when every scale is 1 (exact output)


def _check_mode(inference: str) -> str:
    if inference not in INFERENCE_MODES:
        raise ValueError(
            f"inference must be one of {', '.join(map(repr, INFERENCE_MODES))}, got {inference!r}"
        )
    if inference == "packed":
        require_tensorflow_backend("Packed binary inference (inference='packed')")
    return inference


class PackedInferenceMixin:
    """The ``inference`` state of BinaryDense / BinaryConv2D (see the module docstring)."""

    _packed: _Packed | None = None
    _use_kernels: bool | None = None

    def _init_inference(self, inference: str) -> None:
        self.inference = _check_mode(inference)

    # ---- public API ----

    def freeze(self, use_kernels: bool | None = None) -> bool:
        """Switches the layer to packed XNOR-popcount inference; packs the kernel now.

        Args:
            use_kernels: ``None`` runs the compiled kernels when available, ``False``
                forces the pure-TF fallback, ``True`` requires the compiled kernels
                (as in :func:`tfcompress.ops.tf.pack_bits`). Not saved in the config.

        Returns:
            True when calls will run the packed op; False when the layer keeps its normal
            path (see :attr:`packed_unsupported_reason`).

        Raises:
            RuntimeError: Keras is not running on the TensorFlow backend.

        Example:
            >>> layer = BinaryDense(64, kernel_quantizer="magnitude_aware_sign")
            >>> layer.build((None, 128))
            >>> layer.freeze()
            True
        """
        require_tensorflow_backend("Packed binary inference (freeze)")
        self.inference = "packed"
        self._use_kernels = use_kernels
        if self.built:
            self._repack()
        return self.inference_path == "packed"

    def unfreeze(self) -> None:
        """Back to the normal (trainable) path; drops the packed kernel."""
        self.inference = "default"
        self._packed = None

    @property
    def frozen(self) -> bool:
        """Whether the layer is in the ``"packed"`` inference mode."""
        return self.inference == "packed"

    @property
    def inference_path(self) -> str:
        """``"packed"`` when calls run the XNOR-popcount op, else ``"default"``."""
        return "packed" if self._packed is not None else "default"

    @property
    def packed_unsupported_reason(self) -> str | None:
        """Why this layer cannot run packed (None when it can)."""
        q_in, q_kernel = self.input_quantizer, self.kernel_quantizer
        if not isinstance(q_in, _SIGN_QUANTIZERS):
            return (
                f"input_quantizer={q_in!r} does not give binary inputs (needs one of "
                f"{', '.join(c.__name__ for c in _SIGN_QUANTIZERS)})"
            )
        if q_kernel is None or q_kernel.pack_kind != "binary":
            return f"kernel_quantizer={q_kernel!r} does not give a binary kernel"
        if getattr(q_kernel, "channel_axis", -1) not in (-1, None):
            return f"kernel scales along channel_axis={q_kernel.channel_axis}, not the last axis"
        return self._conv_unsupported_reason()

    def _conv_unsupported_reason(self) -> str | None:
        return None

    # ---- state kept in step with the weights ----

    def _repack(self) -> None:
        self._packed = None
        if self.inference != "packed" or not self.built or self.packed_unsupported_reason:
            return
        from tfcompress.kernels import tf as tops

        values, scales = self.binary_kernel()
        values = values.astype(np.float32)
        if values.ndim == 2:
            kernel = tops.pack_dense_kernel(values, _BITWIDTH, use_kernels=self._use_kernels)
        else:
            kernel = tops.pack_conv2d_kernel(values, _BITWIDTH, use_kernels=self._use_kernels)
        scale = None if np.all(scales == 1.0) else ops.convert_to_tensor(scales, "float32")
        self._packed = _Packed(kernel, scale)

    def load_own_variables(self, store) -> None:
        super().load_own_variables(store)
        self._repack()

    def set_weights(self, weights) -> None:
        super().set_weights(weights)
        self._repack()

    # ---- the packed call ----

    def _packed_forward(self, inputs, training):
        if training:
            raise RuntimeError(
                f"layer {self.name!r} is frozen for packed inference (no gradients); "
                "call unfreeze() (or tfcompress.layers.unfreeze_binary(model)) before training"
            )
        x = ops.cast(inputs, "float32")
        bias = None if self.bias is None else ops.convert_to_tensor(self.bias)
        y = self._packed_op(x, bias)
        y = ops.cast(y, self.compute_dtype)
        return y if self.activation is None else self.activation(y)

    def _inference_config(self, config: dict[str, Any]) -> dict[str, Any]:
        config["inference"] = self.inference
        return config


def _binary_layers(model: keras.layers.Layer):
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, PackedInferenceMixin)
    ]


def _reset_compiled_functions(model: keras.layers.Layer) -> None:
    # Keras caches the traced predict/evaluate functions; they must see the new path.
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for attr in ("predict_function", "test_function", "train_function"):
            if getattr(layer, attr, None) is not None:
                setattr(layer, attr, None)


def freeze_binary(model: keras.layers.Layer, use_kernels: bool | None = None) -> dict[str, str]:
    """Puts every BinaryDense / BinaryConv2D of ``model`` in packed inference mode, in place.

    Layers with binary kernels and sign-quantized inputs then run the XNOR-popcount ops;
    the others keep their normal path. Predictions are unchanged: exactly for unscaled
    kernels (``ste_sign``), up to float32 rounding of the per-channel scale multiply for
    ``magnitude_aware_sign``. The model can no longer train (``training=True`` raises) until
    :func:`unfreeze_binary`. Saving keeps the mode (``inference="packed"`` in the config).

    Args:
        model: A built Keras model (or layer).
        use_kernels: As in :meth:`BinaryDense.freeze`.

    Returns:
        ``{layer name: "packed" | "default"}`` for every binary Dense/Conv2D layer.

    Raises:
        RuntimeError: Keras is not running on the TensorFlow backend.
        ValueError: ``model`` is not built, or has no BinaryDense/BinaryConv2D layer.

    Example:
        >>> model = tfcompress.models.digits_binary_cnn()
        >>> tfcompress.layers.freeze_binary(model)
        {'conv2': 'packed', 'conv3': 'packed', 'dense1': 'packed'}
    """
    require_tensorflow_backend("Packed binary inference (freeze_binary)")
    if not isinstance(model, keras.layers.Layer) or not model.built:
        raise ValueError(f"model must be a built Keras model, got {model!r}")
    layers = _binary_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no BinaryDense or BinaryConv2D layer to freeze")
    for layer in layers:
        layer.freeze(use_kernels=use_kernels)
    _reset_compiled_functions(model)
    return {layer.name: layer.inference_path for layer in layers}


def unfreeze_binary(model: keras.layers.Layer) -> None:
    """Undoes :func:`freeze_binary`: every binary layer back to its normal, trainable path.

    Args:
        model: A Keras model (or layer).

    Example:
        >>> tfc.layers.freeze_binary(model)     # packed XNOR-popcount inference
        >>> model.predict(x)
        >>> tfc.layers.unfreeze_binary(model)   # back to the trainable path before fit()
        >>> model.fit(x, y)
    """
    for layer in _binary_layers(model):
        layer.unfreeze()
    _reset_compiled_functions(model)

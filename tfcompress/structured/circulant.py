"""Block-circulant Dense layers, and the base shared with the other block-structured layers.

:class:`BlockStructuredDense` holds a Dense kernel (``A = kernel.T``, ``m x n``)
as a grid of ``b x b`` blocks, each filled from ``P`` parameters by the offset
``r - s`` of its entries: ``A_ij[r, s] = p_ij[offset_index(r - s)]``. Such a
block is a circular (circulant) or linear (Toeplitz) convolution, so there are
three products with the same outputs:

* ``"fft"``: ``y_i = IFFT(sum_j FFT(c_ij) . FFT(x_j))`` with ``keras.ops.rfft``.
  The inverse is a second forward ``rfft`` (:func:`irfft_via_rfft`): TFLite has
  a builtin ``RFFT2D`` but no builtin ``IRFFT`` or ``COMPLEX``;
* ``"conv"``: a multi-channel 1-D convolution (positions within a block,
  channels across blocks) that lowers to one builtin ``CONV_2D`` holding
  ``q mn / b`` weights, not ``mn`` (``q``: :attr:`BlockStructuredDense.conv_phases`);
* ``"dense"``: the expanded ``(n, m)`` kernel and one matmul (in TFLite the
  expansion is constant-folded into a plain ``FULLY_CONNECTED``).

``"auto"`` (the default) is ``"conv"``, the measured choice: see
:func:`resolve_product` and ``docs/structured.md``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = [
    "PRODUCTS",
    "BlockStructuredDense",
    "CirculantDense",
    "irfft_via_rfft",
    "resolve_product",
]

PRODUCTS = ("auto", "fft", "conv", "dense")

#: The fewest channels the "conv" product gives its convolution (see ``conv_phases``).
CONV_CHANNELS = 16


def _numpy(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def check_positive_int(owner: str, argument: str, value: Any) -> int:
    """``value`` as an int, or a ValueError naming ``argument`` and ``value``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {argument} must be a positive int, got {value!r}")
    return int(value)


def resolve_product(product: str, block_size: int) -> str:
    """The product ``"auto"`` stands for (other products are returned as they are).

    ``"conv"``: measured in LiteRT (one thread, batch 1, ``docs/structured.md``),
    the circulant convolution ran at 0.33x-0.99x the dense latency from 256 to
    2048 wide, in a file 13x-124x smaller; ``"fft"`` (the smallest file) was
    slower than dense below 1024 wide. A ``block_size`` of 1 is a plain Dense
    kernel: always ``"dense"``.
    """
    if block_size == 1:
        return "dense"
    return "conv" if product == "auto" else product


def irfft_via_rfft(real: Any, imag: Any, length: int) -> Any:
    """``irfft((real, imag), length)`` along the last axis, computed with one forward rfft.

    For a real signal ``y`` with spectrum ``Y = A + iB`` (``A`` even, ``B`` odd),
    ``y[r] = (1/L) sum_k A_k cos(2 pi k r / L) - B_k sin(2 pi k r / L)``. The
    sequence ``s = A_full + B_full`` (``B``'s mirrored half negated) has a DFT whose
    real part is the cosine sum and whose imaginary part is minus the sine sum, so
    ``y[r] = (Re + Im)(rfft(s))[r] / L`` for ``r <= L/2`` and ``(Re - Im)[L - r] / L``
    above. The imaginary parts at DC and Nyquist (zero for a real signal) are
    dropped. This exists because TFLite's builtins have ``RFFT2D`` but no inverse.
    """
    half = length // 2
    even = length % 2 == 0
    top = half if even else half + 1  # bins 1 .. top-1 appear twice in the full spectrum
    parts = [real[..., :1], real[..., 1:top] + imag[..., 1:top]]
    if even:
        parts.append(real[..., half : half + 1])
    parts.append(ops.flip(real[..., 1:top] - imag[..., 1:top], axis=-1))
    re, im = ops.rfft(ops.concatenate(parts, axis=-1))
    upper = ops.flip((re - im)[..., 1 : length - half], axis=-1)
    return ops.concatenate([re + im, upper], axis=-1) / float(length)


def _block_initializer(initializer: Any, params_per_block: int, block_size: int):
    """Draws the ``(m/b, n/b, P)`` parameters with the variance of the dense ``(n, m)`` kernel.

    The initializer sees shape ``(P, n/b, m/b)``, whose Keras fans are ``(nP/b,
    mP/b)``; for a ``VarianceScaling`` initializer (Glorot, He, LeCun) the scale
    is multiplied by ``P/b`` so the fans are effectively ``(n, m)``, as for Dense.
    """
    if isinstance(initializer, keras.initializers.VarianceScaling) and params_per_block != (
        block_size
    ):
        initializer = copy.copy(initializer)
        initializer.scale = initializer.scale * params_per_block / block_size

    def initialize(shape, dtype=None):
        out_blocks, in_blocks, params = shape
        return ops.transpose(initializer((params, in_blocks, out_blocks), dtype=dtype), (2, 1, 0))

    return initialize


class BlockStructuredDense(keras.layers.Layer):
    """Base of Dense layers whose kernel is a grid of ``b x b`` structured blocks.

    Subclasses define the block family: :meth:`params_per_block` (``P``),
    :meth:`offset_index` (which parameter fills the entries at offset ``r - s``),
    the circulant embedding (:meth:`fft_length`, :meth:`_fft_columns`), the
    convolution's taps and input extension (:meth:`conv_taps`, ``periodic``).
    Weights, products, dense kernel, least-squares projection and config are
    shared. The parameter tensor is ``(units/b, in/b, P)``.
    """

    weight_name = "blocks"

    def __init__(
        self,
        units: int,
        block_size: int,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        product: str = "auto",
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        units = check_positive_int(owner, "units", units)
        block_size = check_positive_int(owner, "block_size", block_size)
        if units % block_size:
            raise ValueError(
                f"{owner}: block_size={block_size} must divide units={units}; expected a "
                f"divisor of {units}"
            )
        if product not in PRODUCTS:
            raise ValueError(f"{owner}: product must be one of {PRODUCTS}, got {product!r}")
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.units = units
        self.block_size = block_size
        self.product = product
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True
        self.input_dim: int | None = None

    # --- the block family (subclasses) ------------------------------------
    #: Whether the convolution's input extension wraps around (circulant) or is zeros.
    periodic = True

    @classmethod
    def params_per_block(cls, block_size: int) -> int:
        raise NotImplementedError

    @classmethod
    def offset_index(cls, offsets: np.ndarray, block_size: int) -> np.ndarray:
        """The parameter that fills block entries ``[r, s]`` with ``r - s = offsets``."""
        raise NotImplementedError

    @classmethod
    def conv_taps(cls, positions: int) -> int:
        """Taps of the convolution over ``positions`` (``p`` circulant, ``2p - 1`` Toeplitz)."""
        raise NotImplementedError

    def fft_length(self) -> int:
        raise NotImplementedError

    def _fft_columns(self, params: Any) -> Any:
        """First columns ``(m/b, n/b, L)`` of the circulant blocks the blocks are the corner of."""
        raise NotImplementedError

    @classmethod
    def block_index(cls, block_size: int) -> np.ndarray:
        """``(b, b)`` ints: block entry ``[r, s]`` is parameter ``index[r, s]``."""
        r = np.arange(block_size)
        return cls.offset_index(r[:, None] - r[None, :], block_size)

    # --- Keras ---------------------------------------------------------------
    def build(self, input_shape: tuple) -> None:
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f"{self.name}: the last input dimension must be known")
        if input_dim % self.block_size:
            raise ValueError(
                f"{self.name} ({type(self).__name__}): block_size={self.block_size} must divide "
                f"the input dimension {input_dim}; expected a divisor of {input_dim}"
            )
        self.input_dim = int(input_dim)
        b = self.block_size
        params = self.params_per_block(b)
        setattr(
            self,
            self.weight_name,
            self.add_weight(
                name=self.weight_name,
                shape=(self.units // b, self.input_dim // b, params),
                initializer=_block_initializer(self.kernel_initializer, params, b),
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            ),
        )
        self.bias = (
            self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
            if self.use_bias
            else None
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})

    @property
    def structured_weight(self) -> Any:
        """The ``(units/b, in/b, P)`` parameter variable."""
        return getattr(self, self.weight_name)

    @property
    def resolved_product(self) -> str:
        """The product the layer computes (``"auto"`` resolved, see :func:`resolve_product`)."""
        return resolve_product(self.product, self.block_size)

    def call(self, inputs: Any) -> Any:
        product = self.resolved_product
        if product == "dense":
            outputs = ops.matmul(inputs, self.kernel)
        else:
            b = self.block_size
            flat = ops.reshape(inputs, (-1, self.input_dim // b, b))
            blocks = self._fft_product(flat) if product == "fft" else self._conv_product(flat)
            if len(inputs.shape) == 2:
                outputs = ops.reshape(blocks, (-1, self.units))
            else:
                outputs = ops.reshape(blocks, (*ops.shape(inputs)[:-1], self.units))
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs

    @property
    def conv_phases(self) -> int:
        """``q``: the ``"conv"`` product runs over ``b/q`` positions with ``q``-times more channels.

        Polyphase split: with ``r = q r1 + r0``, a ``b x b`` circulant (Toeplitz)
        block is a ``q x q`` grid of ``b/q`` circulant (Toeplitz) blocks, so the
        convolution can trade positions for channels. XNNPACK's ``CONV_2D`` is
        slow with few output channels (measured, ``docs/structured.md``), so ``q``
        is the smallest divisor of ``b`` giving at least ``CONV_CHANNELS`` input
        and output channels, capped at ``b/4`` (at least 4 positions). The kernel
        then holds ``q`` times the parameters (each repeated ``q`` times, at most
        a quarter of the dense kernel's weights); the multiply-adds do not change.
        """
        b = self.block_size
        fewest = min(self.input_dim, self.units) // b
        divisors = [q for q in range(1, max(1, b // 4) + 1) if b % q == 0]
        return next((q for q in divisors if fewest * q >= CONV_CHANNELS), divisors[-1])

    def _conv_kernel(self) -> Any:
        """``(taps, q n/b, q m/b)``: tap ``u`` is the position offset ``r1 - s1 = p - 1 - u``."""
        b, q = self.block_size, self.conv_phases
        p = b // q
        taps = self.conv_taps(p)
        u = np.arange(taps)[:, None, None]
        s0, r0 = np.arange(q)[None, :, None], np.arange(q)[None, None, :]
        index = self.offset_index(q * (p - 1 - u) + r0 - s0, b)  # [u, s0, r0]
        out_blocks, in_blocks = self.units // b, self.input_dim // b
        kernel = ops.take(self.structured_weight, index.reshape(-1), axis=2)
        kernel = ops.reshape(kernel, (out_blocks, in_blocks, taps, q, q))  # [i, j, u, s0, r0]
        kernel = ops.transpose(kernel, (2, 1, 3, 0, 4))  # [u, j, s0, i, r0]
        return ops.reshape(kernel, (taps, in_blocks * q, out_blocks * q))

    def _conv_product(self, flat: Any) -> Any:
        b, q = self.block_size, self.conv_phases
        p = b // q
        out_blocks, in_blocks = self.units // b, self.input_dim // b
        # Input entry s = q s1 + s0 of block j is position s1, channel j q + s0.
        x = ops.reshape(flat, (-1, in_blocks, p, q))
        x = ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (-1, p, in_blocks * q))
        if not self.periodic:
            x = ops.pad(x, [[0, 0], [p - 1, p - 1], [0, 0]])
        elif p > 1:  # position e of the extension is x[(e - (p - 1)) mod p]
            x = ops.concatenate([x[:, 1:], x], axis=1)
        y = ops.conv(x, ops.cast(self._conv_kernel(), x.dtype), padding="valid")  # (B, p, q m/b)
        y = ops.transpose(ops.reshape(y, (-1, p, out_blocks, q)), (0, 2, 1, 3))
        return ops.reshape(y, (-1, out_blocks, b))

    def _fft_product(self, flat: Any) -> Any:
        b, length = self.block_size, self.fft_length()
        dtype = keras.backend.standardize_dtype(flat.dtype)
        # FFTs need float32/64; mixed precision computes this part in float32.
        x = flat if dtype in ("float32", "float64") else ops.cast(flat, "float32")
        if length != b:
            x = ops.pad(x, [[0, 0], [0, 0], [0, length - b]])
        xr, xi = ops.rfft(x)  # (B, n/b, F)
        cr, ci = ops.rfft(ops.cast(self._fft_columns(self.structured_weight), x.dtype))
        # Per frequency, an (n/b -> m/b) complex matrix product: batch matmuls over F.
        xr, xi = ops.transpose(xr, (2, 0, 1)), ops.transpose(xi, (2, 0, 1))  # (F, B, n/b)
        cr, ci = ops.transpose(cr, (2, 1, 0)), ops.transpose(ci, (2, 1, 0))  # (F, n/b, m/b)
        yr = ops.matmul(xr, cr) - ops.matmul(xi, ci)
        yi = ops.matmul(xr, ci) + ops.matmul(xi, cr)
        y = irfft_via_rfft(ops.transpose(yr, (1, 2, 0)), ops.transpose(yi, (1, 2, 0)), length)
        if length != b:
            y = y[..., :b]
        return ops.cast(y, dtype) if x.dtype != flat.dtype else y

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.units)

    # --- the dense view and the projection --------------------------------------
    @property
    def kernel(self) -> Any:
        """The effective ``(in, units)`` kernel (a tensor, computed on access)."""
        b = self.block_size
        out_blocks, in_blocks = self.units // b, self.input_dim // b
        index = self.block_index(b).reshape(-1)
        blocks = ops.take(self.structured_weight, index, axis=2)  # (m/b, n/b, b*b)
        blocks = ops.reshape(blocks, (out_blocks, in_blocks, b, b))  # [i, j, r, s]
        return ops.reshape(ops.transpose(blocks, (1, 3, 0, 2)), (self.input_dim, self.units))

    @classmethod
    def project(cls, kernel: Any, block_size: int) -> np.ndarray:
        """The least-squares structured parameters ``(m/b, n/b, P)`` nearest to ``kernel``.

        Each kernel entry is exactly one parameter, so the Frobenius-nearest
        structured matrix sets each parameter to the mean of the entries it fills
        (for circulant blocks: the mean along each circulant diagonal).
        """
        matrix = _numpy(kernel).astype(np.float64)
        b = block_size
        n, m = matrix.shape
        if n % b or m % b:
            raise ValueError(
                f"block_size={b} must divide both kernel dimensions, got kernel shape {(n, m)}"
            )
        blocks = matrix.reshape(n // b, b, m // b, b).transpose(2, 0, 3, 1)  # [i, j, r, s]
        index = cls.block_index(b).reshape(-1)
        onehot = np.zeros((b * b, cls.params_per_block(b)))
        onehot[np.arange(b * b), index] = 1.0
        sums = blocks.reshape(m // b, n // b, b * b) @ onehot
        return sums / onehot.sum(axis=0)

    def set_kernel(self, kernel: Any, bias: Any = None) -> float:
        """Sets the parameters to the least-squares projection of ``kernel`` (and the bias).

        Args:
            kernel: An ``(in, units)`` matrix, e.g. a trained Dense kernel.
            bias: Optional ``(units,)`` bias.

        Returns:
            The squared Frobenius error ``||kernel - structured||^2``.

        Raises:
            ValueError: If the layer is not built or the shapes differ.
        """
        if not self.built:
            raise ValueError(f"{self.name}: build the layer before set_kernel")
        matrix = _numpy(kernel).astype(np.float64)
        expected = (self.input_dim, self.units)
        if matrix.shape != expected:
            raise ValueError(f"kernel must have shape {expected}, got {matrix.shape}")
        params = self.project(matrix, self.block_size)
        self.structured_weight.assign(params.astype(self.structured_weight.dtype))
        if bias is not None and self.bias is not None:
            self.bias.assign(_numpy(bias).astype(self.bias.dtype))
        return float(np.sum((matrix - _numpy(self.kernel).astype(np.float64)) ** 2))

    def to_dense(self) -> keras.layers.Dense:
        """An equivalent, built ``keras.layers.Dense`` (same name, kernel expanded)."""
        if not self.built:
            raise ValueError(f"{self.name}: build the layer before to_dense")
        dense = keras.layers.Dense.from_config(dense_config(self))
        dense.build((None, self.input_dim))
        dense.kernel.assign(self.kernel)
        if self.bias is not None:
            dense.bias.assign(self.bias)
        return dense

    def macs_per_row(self) -> int:
        """Multiply-accumulates of the product for one input row (one position of a feature map).

        ``"dense"`` and circulant ``"conv"``: ``m n``; Toeplitz ``"conv"``:
        ``(2b - q) m n / b`` (its taps reach both ways); ``"fft"``: the complex
        products (``4 F (n/b)(m/b)``, ``F = L/2 + 1`` frequencies of length
        ``L``) plus ``L log2 L`` per transform (an estimate: one forward
        transform per input block, two per output block for the inverse).
        ``tfc.summary`` multiplies it by the number of positions.
        """
        m, n, b = self.units, self.input_dim, self.block_size
        product = self.resolved_product
        if product == "dense":
            return m * n
        if product == "conv":
            q = self.conv_phases
            return self.conv_taps(b // q) * q * m * n // b
        length = self.fft_length()
        transforms = (n // b + 2 * (m // b)) * round(length * math.log2(length))
        return 4 * (length // 2 + 1) * (n // b) * (m // b) + transforms

    def compression_stats(self) -> dict[str, Any]:
        """Parameters of the layer, for ``tfc.summary`` (the bias included)."""
        if not self.built:
            return {}
        kernel = math.prod(self.structured_weight.shape)
        return {"params": int(kernel) + (self.units if self.use_bias else 0)}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "block_size": self.block_size,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "product": self.product,
            }
        )
        return config


def dense_config(layer: BlockStructuredDense) -> dict[str, Any]:
    """The ``keras.layers.Dense`` config equivalent to a structured layer's."""
    config = layer.get_config()
    for key in ("block_size", "product"):
        config.pop(key)
    return config


@keras.saving.register_keras_serializable(package="tfcompress")
class CirculantDense(BlockStructuredDense):
    """A Dense layer whose kernel is block-circulant: ``y = act(x W + b)``.

    ``A = W^T`` (``units x in``) is a grid of ``b x b`` circulant blocks; block
    ``(i, j)`` is given by its first column ``c_ij``: ``A_ij[r, s] = c_ij[(r - s)
    mod b]``, so ``A_ij x_j`` is the circular convolution ``c_ij * x_j`` and
    ``y_i = sum_j IFFT(FFT(c_ij) . FFT(x_j))``. The layer stores ``c`` as a
    ``(units/b, in/b, b)`` tensor: ``in * units / b`` kernel parameters instead of
    ``in * units``. ``in`` and ``units`` must be multiples of ``block_size``. It
    acts on the last axis of inputs of any rank, as ``keras.layers.Dense``.

    Args:
        units: Output dimension, a multiple of ``block_size``.
        block_size: ``b``, the side of each circulant block (1: a plain Dense kernel).
        activation: As in ``keras.layers.Dense``.
        use_bias: As in ``keras.layers.Dense``.
        kernel_initializer: Draws the first columns; Glorot/He/LeCun scale as
            for the dense ``(in, units)`` kernel.
        bias_initializer: As in ``keras.layers.Dense``.
        kernel_regularizer: Applied to the first columns.
        bias_regularizer: As in ``keras.layers.Dense``.
        activity_regularizer: As in ``keras.layers.Dense``.
        kernel_constraint: Applied to the first columns.
        bias_constraint: As in ``keras.layers.Dense``.
        product: ``"auto"``, ``"fft"``, ``"conv"`` or ``"dense"`` (module
            docstring); all give the same outputs to float tolerance.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).

    Returns:
        A tensor of shape ``(..., units)``.

    Raises:
        ValueError: ``units`` or ``block_size`` not a positive int, ``block_size``
            not dividing ``units`` (here) or the input dimension (at build), an
            unknown ``product``.

    Example:
        >>> layer = CirculantDense(1024, block_size=64, activation="relu")
        >>> y = layer(np.zeros((2, 512), "float32"))   # 512 * 1024 / 64 = 8192 weights
        >>> layer.set_kernel(trained_dense.kernel)     # nearest block-circulant kernel

    References:
        Cheng et al., "An exploration of parameter redundancy in deep networks
        with circulant projections", ICCV 2015; Ding et al., "CirCNN: Accelerating
        and Compressing Deep Neural Networks Using Block-Circulant Weight
        Matrices", MICRO 2017.
    """

    weight_name = "columns"

    @classmethod
    def params_per_block(cls, block_size: int) -> int:
        return block_size

    @classmethod
    def offset_index(cls, offsets: np.ndarray, block_size: int) -> np.ndarray:
        return offsets % block_size

    @classmethod
    def conv_taps(cls, positions: int) -> int:
        return positions

    def fft_length(self) -> int:
        return self.block_size

    def _fft_columns(self, params: Any) -> Any:
        return params

"""Packed binary ops: compiled kernels and pure-TF fallbacks against NumPy references."""

import numpy as np
import pytest
import tensorflow as tf

from tfcompress.kernels.tf import binary_ops as bo
from tfcompress.ops import tf as tops

RNG = np.random.default_rng(1234)


def pm1(*shape):
    return np.where(RNG.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def np_pack(x, bits):
    """NumPy reference: bit j of word w is 1 when value w * bits + j is negative."""
    x = np.asarray(x)
    k = x.shape[-1]
    flags = (x < 0).reshape(int(np.prod(x.shape[:-1])), k)
    words = -(-k // bits)
    flags = np.pad(flags, [(0, 0), (0, words * bits - k)])
    packed = np.packbits(flags, axis=-1, bitorder="little")
    packed = np.ascontiguousarray(packed).view("<i4" if bits == 32 else "<i8")
    return packed.reshape((*x.shape[:-1], words))


def np_conv(x, f, strides, padding, dilation):
    """NumPy reference conv, NHWC input, filters [O, KH, KW, C], zero padding."""
    b, h, w, c = x.shape
    o, kh, kw, _ = f.shape
    (sy, sx), (dy, dx) = strides, dilation
    ey, ex = (kh - 1) * dy + 1, (kw - 1) * dx + 1
    if padding == "valid":
        oh, ow = max(0, (h - ey) // sy + 1), max(0, (w - ex) // sx + 1)
        py = px = 0
    else:
        oh, ow = -(-h // sy), -(-w // sx)
        py = max((oh - 1) * sy + ey - h, 0) // 2
        px = max((ow - 1) * sx + ex - w, 0) // 2
    xp = np.zeros((b, h + ey + oh * sy, w + ex + ow * sx, c), np.int64)
    xp[:, py : py + h, px : px + w] = x
    out = np.zeros((b, oh, ow, o), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * dy : i * dy + oh * sy : sy, j * dx : j * dx + ow * sx : sx]
            out += np.einsum("bhwc,oc->bhwo", patch[:, :oh, :ow], f[:, i, j].astype(np.int64))
    return out


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize(
    "shape", [(5, 37), (1, 64), (0, 70), (3, 2, 100), (4, 1), (2, 0), (1, 129)]
)
def test_pack_unpack_match_numpy(kernel_path, bits, shape):
    x = pm1(*shape)
    packed = tops.pack_bits(x, bits)
    assert packed.dtype == (tf.int32 if bits == 32 else tf.int64)
    np.testing.assert_array_equal(packed.numpy(), np_pack(x, bits))
    np.testing.assert_array_equal(tops.unpack_bits(packed, shape[-1]).numpy(), x)


def test_pack_signs_and_axis(kernel_path):
    x = np.array([[0.0, -0.0, 0.3, -2.0, 1e-30, -1e-30, 5.0]], np.float32)
    # sign(0) = +1, only strictly negative values set a bit.
    np.testing.assert_array_equal(tops.pack_bits(x).numpy(), np_pack(x, 32))
    assert tops.pack_bits(x).numpy()[0, 0] == (1 << 3) | (1 << 5)
    y = pm1(70, 3)
    np.testing.assert_array_equal(tops.pack_bits(y, 64, axis=0).numpy(), np_pack(y.T, 64).T)
    np.testing.assert_array_equal(
        tops.unpack_bits(tops.pack_bits(y, 64, axis=0), 70, axis=0).numpy(), y
    )
    np.testing.assert_array_equal(tops.pack_bits(y.astype(np.float64)).numpy(), np_pack(y, 32))


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize(
    "m,k,n", [(7, 37, 5), (1, 100, 9), (0, 65, 3), (5, 64, 0), (6, 1, 4), (13, 333, 11), (4, 0, 2)]
)
def test_binary_matmul_matches_numpy(kernel_path, bits, m, k, n):
    a, b = pm1(m, k), pm1(n, k)
    ref = a.astype(np.int64) @ b.T.astype(np.int64)
    pa, pb = tops.pack_bits(a, bits), tops.pack_bits(b, bits)
    out = tops.binary_matmul(pa, pb, k)
    assert out.dtype == tf.float32 and out.shape == (m, n)
    np.testing.assert_array_equal(out.numpy(), ref)
    out_int = tops.binary_matmul(pa, pb, k, out_type=tf.int32)
    assert out_int.dtype == tf.int32
    np.testing.assert_array_equal(out_int.numpy(), ref)


def test_binary_matmul_batched_leading_dims_and_padding_bits_ignored(kernel_path):
    a, b = pm1(2, 3, 45), pm1(6, 45)
    ref = np.einsum("ijk,nk->ijn", a.astype(np.int64), b.astype(np.int64))
    pa, pb = tops.pack_bits(a), tops.pack_bits(b)
    np.testing.assert_array_equal(tops.binary_matmul(pa, pb, 45).numpy(), ref)
    # Garbage in the 19 padding bits of the last word must not change the result.
    junk = np.int32(-(1 << 13))  # bits 13..31 set
    pb_dirty = pb.numpy().copy()
    pb_dirty[:, -1] |= junk
    np.testing.assert_array_equal(tops.binary_matmul(pa, pb_dirty, 45).numpy(), ref)


@pytest.mark.parametrize(
    "b,h,w,c,o,kh,kw,strides,padding,dilation",
    [
        (2, 7, 6, 37, 5, 3, 3, (1, 1), "same", (1, 1)),
        (1, 5, 5, 3, 4, 2, 3, (2, 1), "valid", (1, 1)),
        (0, 6, 6, 8, 3, 3, 3, (1, 1), "same", (1, 1)),
        (1, 8, 7, 65, 3, 3, 3, (1, 1), "same", (2, 2)),
        (2, 4, 5, 32, 6, 1, 1, (2, 2), "same", (1, 1)),
        (1, 6, 6, 96, 7, 5, 5, (2, 2), "same", (1, 1)),
        (1, 2, 2, 4, 2, 3, 3, (1, 1), "valid", (1, 1)),
    ],
)
@pytest.mark.parametrize("bits", [32, 64])
def test_binary_conv2d_matches_numpy(
    kernel_path, bits, b, h, w, c, o, kh, kw, strides, padding, dilation
):
    x, f = pm1(b, h, w, c), pm1(o, kh, kw, c)
    ref = np_conv(x, f, strides, padding, dilation)
    out = tops.binary_conv2d(
        tops.pack_bits(x, bits), tops.pack_bits(f, bits), c, strides, padding, dilation
    )
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out.numpy(), ref)


# Odd sizes around every path's tile (1x4, 2x4, 4x4 outputs), vector (4 or 8 words) and byte-counter
# chunk (31 x 256 bits) edges, and a reduction longer than one cache block (> 32768 bits).
ISA_SHAPES = [(13, 1000, 9), (1, 31, 1), (5, 255, 3), (2, 257, 7), (6, 7937, 5), (3, 40001, 6)]


@pytest.mark.parametrize("m,k,n", ISA_SHAPES)
def test_compiled_isa_paths_agree(compiled_available, m, k, n):
    if not compiled_available:
        pytest.skip("compiled kernels unavailable")
    isas = bo.supported_isas()
    assert isas[-1] == "generic" and tops.kernel_isa() in (*isas, "avx512_vpopcntdq")
    a, b = pm1(m, k), pm1(n, k)
    ref = a.astype(np.int64) @ b.T.astype(np.int64)
    for bits in (32, 64):
        ref_a, ref_b = np_pack(a, bits), np_pack(b, bits)
        for isa in isas:
            pa, pb = tops.pack_bits(a, bits, isa=isa), tops.pack_bits(b, bits, isa=isa)
            np.testing.assert_array_equal(pa.numpy(), ref_a)
            np.testing.assert_array_equal(pb.numpy(), ref_b)
            np.testing.assert_array_equal(tops.binary_matmul(pa, pb, k, isa=isa).numpy(), ref)
            out = tops.binary_matmul(pa, pb, k, out_type=tf.int32, isa=isa)
            np.testing.assert_array_equal(out.numpy(), ref)


def test_compiled_isa_paths_agree_on_conv(compiled_available):
    if not compiled_available:
        pytest.skip("compiled kernels unavailable")
    x, f = pm1(2, 6, 5, 70), pm1(5, 3, 3, 70)
    ref = np_conv(x, f, (1, 1), "same", (1, 1))
    for bits in (32, 64):
        px, pf = tops.pack_bits(x, bits), tops.pack_bits(f, bits)
        for isa in bo.supported_isas():
            out = tops.binary_conv2d(px, pf, 70, padding="same", isa=isa)
            np.testing.assert_array_equal(out.numpy(), ref)


def test_isa_env_override(compiled_available, monkeypatch):
    if not compiled_available:
        pytest.skip("compiled kernels unavailable")
    a, b = pm1(5, 300), pm1(6, 300)
    ref = a.astype(np.int64) @ b.T.astype(np.int64)
    pa, pb = tops.pack_bits(a), tops.pack_bits(b)
    names = {"avx512": "avx512_vpopcntdq"}
    for isa in bo.supported_isas():
        monkeypatch.setenv(bo.ENV_ISA, isa.upper())
        assert tops.kernel_isa() == names.get(isa, isa)
        np.testing.assert_array_equal(tops.binary_matmul(pa, pb, 300).numpy(), ref)
        np.testing.assert_array_equal(tops.pack_bits(a).numpy(), pa.numpy())
    # An explicit isa wins over the variable.
    monkeypatch.setenv(bo.ENV_ISA, "generic")
    np.testing.assert_array_equal(tops.binary_matmul(pa, pb, 300, isa="auto").numpy(), ref)
    monkeypatch.setenv(bo.ENV_ISA, "sse9")
    with pytest.raises(ValueError, match="TFCOMPRESS_BINARY_ISA must be one of"):
        tops.binary_matmul(pa, pb, 300)
    missing = [isa for isa in ("avx512", "avx2", "popcnt") if isa not in bo.supported_isas()]
    if missing:
        monkeypatch.setenv(bo.ENV_ISA, missing[0])
        with pytest.raises(ValueError, match=f"TFCOMPRESS_BINARY_ISA='{missing[0]}' but this CPU"):
            tops.kernel_isa()
        with pytest.raises(tf.errors.InvalidArgumentError, match="this CPU lacks"):
            tops.binary_matmul(pa, pb, 300, isa=missing[0])
    monkeypatch.setenv(bo.ENV_ISA, "auto")
    assert tops.kernel_isa() == names.get(bo.supported_isas()[0], bo.supported_isas()[0])


def test_paths_agree_inside_tf_function_with_unknown_batch(kernel_path):
    x, w = RNG.normal(size=(5, 50)).astype(np.float32), RNG.normal(size=(50, 7)).astype(np.float32)
    packed = tops.pack_dense_kernel(w)

    @tf.function(input_signature=[tf.TensorSpec([None, 50], tf.float32)])
    def run(inp):
        return tops.binary_dense_inference(inp, packed)

    ref = np.where(x < 0, -1, 1) @ np.where(w < 0, -1, 1)
    np.testing.assert_array_equal(run(x).numpy(), ref)
    np.testing.assert_array_equal(run(x[:1]).numpy(), ref[:1])
    np.testing.assert_array_equal(run(x[:0]).numpy(), ref[:0])


def test_dense_inference_matches_float_reference(kernel_path):
    x = RNG.normal(size=(4, 3, 77)).astype(np.float32)
    w = RNG.normal(size=(77, 10)).astype(np.float32)
    scale = np.abs(w).mean(axis=0).astype(np.float32)
    bias = RNG.normal(size=10).astype(np.float32)
    for bits in (32, 64):
        out = tops.binary_dense_inference(x, tops.pack_dense_kernel(w, bits), scale, bias)
        dots = (np.where(x < 0, -1, 1) @ np.where(w < 0, -1, 1)).astype(np.float32)
        np.testing.assert_array_equal(out.numpy(), dots * scale + bias)


def test_conv_inference_matches_keras_conv_on_signs(kernel_path):
    import keras

    x = RNG.normal(size=(2, 9, 9, 40)).astype(np.float32)
    layer = keras.layers.Conv2D(
        6, 3, strides=2, padding="same", use_bias=True, bias_initializer="random_normal"
    )
    layer.build(x.shape)
    kernel, bias = (v.numpy() for v in layer.weights)
    layer.set_weights([np.where(kernel < 0, -1.0, 1.0), bias])
    ref = layer(np.where(x < 0, -1.0, 1.0).astype(np.float32)).numpy()
    out = tops.binary_conv2d_inference(
        x, tops.pack_conv2d_kernel(kernel), None, bias, strides=2, padding="same"
    )
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-5)


def test_no_gradient_through_packed_ops(kernel_path):
    x = tf.Variable(RNG.normal(size=(2, 40)).astype(np.float32))
    packed = tops.pack_dense_kernel(RNG.normal(size=(40, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(tops.binary_dense_inference(x, packed))
    assert tape.gradient(y, x) is None

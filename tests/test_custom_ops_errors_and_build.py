"""Packed ops: errors on bad input (both paths) and the build/fallback machinery."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfcompress.kernels.tf import binary_ops as bo
from tfcompress.kernels.tf import build as _build
from tfcompress.ops import tf as tops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_strict_pack_rejects_non_binary(kernel_path):
    x = np.array([[1.0, -1.0, 0.5, 1.0]], np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="only -1 and \\+1"):
        tops.pack_bits(x, strict=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="only -1 and \\+1"):
        tops.pack_bits(np.zeros((2, 3), np.float32), 64, strict=True)
    # +-1 input passes strict mode and matches the non-strict result.
    ok = np.array([[1.0, -1.0, -1.0]], np.float32)
    assert tops.pack_bits(ok, strict=True).numpy()[0, 0] == 6


def test_mismatched_packed_widths_static(kernel_path):
    a = tops.pack_bits(np.ones((2, 40), np.float32))  # 2 words
    b = tops.pack_bits(np.ones((3, 70), np.float32))  # 3 words
    with pytest.raises(ValueError, match=r"packed widths differ.*a_packed has 2.*b_packed has 3"):
        tops.binary_matmul(a, b, 40)
    with pytest.raises(ValueError, match="a_packed has 2 packed words per row, but k=70"):
        tops.binary_matmul(a, tops.pack_bits(np.ones((3, 40), np.float32)), 70)
    with pytest.raises(ValueError, match="same word type"):
        tops.binary_matmul(a, tops.pack_bits(np.ones((3, 40), np.float32), 64), 40)
    x = tops.pack_bits(np.ones((1, 5, 5, 40), np.float32))
    f = tops.pack_bits(np.ones((2, 3, 3, 70), np.float32))
    with pytest.raises(ValueError, match=r"packed widths differ.*x_packed has 2.*filters_packed"):
        tops.binary_conv2d(x, f, 40)
    with pytest.raises(ValueError, match="packed has 2 packed words per row, but k=100"):
        tops.unpack_bits(a, 100)


def test_mismatched_packed_widths_at_run_time(kernel_path):
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)] * 2)
    def matmul(a, b):
        return tops.binary_matmul(a, b, 40)

    a = tops.pack_bits(np.ones((2, 40), np.float32))
    b = tops.pack_bits(np.ones((3, 70), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="packed width"):
        matmul(a, b)
    np.testing.assert_array_equal(matmul(a, a).numpy(), np.full((2, 2), 40.0))


def test_compiled_kernel_checks_widths_itself(compiled_available):
    if not compiled_available:
        pytest.skip("compiled kernels unavailable")
    lib = _build.load()
    a = tf.zeros([2, 2], tf.int32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="packed widths differ"):
        lib.tfc_binary_matmul(a, tf.zeros([3, 3], tf.int32), k=40)
    with pytest.raises(tf.errors.InvalidArgumentError, match="does not match k=100"):
        lib.tfc_binary_matmul(a, a, k=100)
    with pytest.raises(tf.errors.InvalidArgumentError, match="isa must be one of"):
        lib.tfc_binary_matmul(a, a, k=40, isa="sse9")


def test_bad_arguments_are_named():
    x = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="bitwidth must be 32 or 64, got 16"):
        tops.pack_bits(x, 16)
    with pytest.raises(ValueError, match="x must be a float tensor"):
        tops.pack_bits(np.ones((2, 8), np.int32))
    with pytest.raises(ValueError, match="axis must be in"):
        tops.pack_bits(x, axis=2)
    p = tops.pack_bits(x)
    with pytest.raises(ValueError, match="isa must be one of"):
        tops.binary_matmul(p, p, 8, isa="fast")
    with pytest.raises(ValueError, match="padding must be"):
        tops.binary_conv2d(
            tf.zeros([1, 3, 3, 1], tf.int32), tf.zeros([1, 1, 1, 1], tf.int32), 8, padding="full"
        )
    with pytest.raises(ValueError, match="kernel must be 2-D"):
        tops.pack_dense_kernel(np.ones((3, 3, 3), np.float32))


def test_env_var_forces_fallback(compiled_available, monkeypatch):
    monkeypatch.setenv(_build.ENV_DISABLE, "1")
    assert not tops.has_compiled_kernels()
    assert tops.kernel_isa() is None
    assert bo.supported_isas() == ()
    with pytest.raises(RuntimeError, match="TFCOMPRESS_DISABLE_KERNELS"):
        tops.pack_bits(np.ones((1, 3), np.float32), use_kernels=True)
    monkeypatch.setenv(_build.ENV_DISABLE, "0")
    assert tops.has_compiled_kernels() == compiled_available


def test_cache_dir_and_library_name(tmp_path, monkeypatch):
    monkeypatch.setenv(_build.ENV_CACHE_DIR, str(tmp_path))
    assert _build.cache_dir() == tmp_path / "kernels"
    lib = _build.library_path("c++")
    assert lib.parent == tmp_path / "kernels"
    assert f"tf{tf.__version__}" in lib.name
    assert _build.library_path("clang++") != lib  # keyed by compiler too


def test_missing_compiler_falls_back_and_says_so_once(tmp_path, monkeypatch, caplog):
    saved = dict(_build._state)
    monkeypatch.setenv(_build.ENV_CACHE_DIR, str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    _build._reset_for_tests()
    try:
        with caplog.at_level(logging.WARNING, logger="tfcompress.ops.tf"):
            assert not tops.has_compiled_kernels()
            assert not tops.has_compiled_kernels()
        warnings = [r for r in caplog.records if "pure-TensorFlow fallback" in r.getMessage()]
        assert len(warnings) == 1
        assert "no C++ compiler" in warnings[0].getMessage()
        # The ops still work.
        out = tops.binary_matmul(
            tops.pack_bits(np.ones((1, 5), np.float32)),
            tops.pack_bits(-np.ones((2, 5), np.float32)),
            5,
        )
        np.testing.assert_array_equal(out.numpy(), [[-5.0, -5.0]])
    finally:
        _build._state.update(saved)


def test_import_without_compiler_in_fresh_process(tmp_path):
    env = dict(
        os.environ,
        CXX=str(tmp_path / "none"),
        TFCOMPRESS_CACHE_DIR=str(tmp_path),
        PYTHONPATH=ROOT,
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    env.pop(_build.ENV_DISABLE, None)
    code = (
        "import tfcompress as tfc, numpy as np; o = tfc.ops.tf;"
        "print(o.has_compiled_kernels());"
        "p = o.pack_bits(np.array([[1., -1., -1.]], np.float32)); print(int(p.numpy()[0, 0]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "6"]
    assert "pure-TensorFlow fallback" in proc.stderr
    assert not list(tmp_path.glob("kernels/*.so"))

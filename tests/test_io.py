"""core/io: the atomic writer and UnreadableFileError."""

import os
import pickle
import stat

import pytest

import tfcompress as tfc
from tfcompress.core.io import (
    UnreadableFileError,
    atomic_path,
    atomic_write,
    write_bytes,
    write_text,
)


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_creates_and_replaces_with_nothing_left_behind(tmp_path):
    target = tmp_path / "out.bin"
    assert write_bytes(target, b"first") == 5
    inode = os.stat(target).st_ino
    with atomic_write(target) as handle:
        handle.write(b"second")
        assert target.read_bytes() == b"first"  # not visible before the block ends
    assert target.read_bytes() == b"second"
    assert os.stat(target).st_ino != inode
    assert write_text(target, "caf\u00e9\n") == 5
    assert target.read_bytes() == "caf\u00e9\n".encode()
    assert _names(tmp_path) == ["out.bin"]


def test_failure_inside_the_block_keeps_the_previous_file(tmp_path):
    target = tmp_path / "out.json"
    write_text(target, "old")
    with pytest.raises(KeyboardInterrupt), atomic_write(target, "w") as handle:
        handle.write("half of the new")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["out.json"]
    with pytest.raises(RuntimeError, match="boom"), atomic_write(tmp_path / "new.bin") as handle:
        handle.write(b"x")
        raise RuntimeError("boom")
    assert _names(tmp_path) == ["out.json"]


def test_permissions_new_file_follows_umask_overwrite_keeps_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        write_bytes(tmp_path / "new", b"x")
        assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o644
        (tmp_path / "kept").write_bytes(b"x")
        os.chmod(tmp_path / "kept", 0o600)
        write_bytes(tmp_path / "kept", b"y")
        assert stat.S_IMODE(os.stat(tmp_path / "kept").st_mode) == 0o600
    finally:
        os.umask(umask)


def test_a_symlink_target_replaces_the_file_it_points_to(tmp_path):
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    write_bytes(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w', got 'a'"):
        atomic_write(tmp_path / "x", "a").__enter__()
    with pytest.raises(ValueError, match="text mode"):
        atomic_write(tmp_path / "x", "wb", encoding="utf-8").__enter__()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        write_bytes(tmp_path, b"x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_bytes(tmp_path / "no" / "x", b"x")
    assert _names(tmp_path) == []


def test_atomic_path_for_tools_that_write_by_name(tmp_path):
    target = tmp_path / "lib.so"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp.exists() and not target.exists()
        temp.write_bytes(b"built")
    assert target.read_bytes() == b"built"
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_bytes(b"partial")
        raise RuntimeError("compiler failed")
    assert target.read_bytes() == b"built"
    assert _names(tmp_path) == ["lib.so"]


def test_unreadable_file_error_names_the_file_and_the_reason():
    error = tfc.UnreadableFileError("m.tfcp", "checksum mismatch")
    assert isinstance(error, ValueError)
    assert str(error) == "cannot read 'm.tfcp': checksum mismatch"
    assert (error.path, error.reason) == ("m.tfcp", "checksum mismatch")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.path, copy.reason) == (UnreadableFileError, "m.tfcp", error.reason)
    assert str(UnreadableFileError(None, "bad magic")) == "cannot read the given bytes: bad magic"
    assert issubclass(tfc.packing.PackFormatError, UnreadableFileError)


def test_plot_is_written_atomically(tmp_path):
    from tfcompress.reporting.plots import plot_size_vs_accuracy

    target = tmp_path / "plot.png"
    write_bytes(target, b"old")
    inode = os.stat(target).st_ino
    plot_size_vs_accuracy([("a", 1000, 0.9), ("b", 2000, 0.95)], target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.stat(target).st_ino != inode
    assert _names(tmp_path) == ["plot.png"]


def test_kernel_build_replaces_the_cache_file_and_cleans_up_a_failed_build(tmp_path, monkeypatch):
    from tfcompress.kernels.tf import build

    compiler = tmp_path / "fake-cxx"
    # Writes a partial output, then succeeds or fails as FAKE_CXX_FAIL says.
    compiler.write_text(
        '#!/bin/sh\nout=""\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && out="$2"; shift; done\n'
        'printf partial > "$out"\n[ -n "$FAKE_CXX_FAIL" ] && exit 3\nprintf library > "$out"\n'
    )
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv(build.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_CXX_FAIL", "1")
    with pytest.raises(build.KernelBuildError, match="exit 3"):
        build.build()
    folder = tmp_path / "cache" / "kernels"
    assert _names(folder) == []
    monkeypatch.delenv("FAKE_CXX_FAIL")
    target = build.build()
    assert target.read_bytes() == b"library" and _names(folder) == [target.name]

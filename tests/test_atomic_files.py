"""pack, save_packed and the TFLite export never open their target for writing, and a write
that fails midway leaves the previous file byte-identical, loadable, and alone in its folder."""

import contextlib
import errno
import io
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfcompress as tfc
from tfcompress.packing import load_packed, save_packed

X = np.linspace(-1, 1, 10, dtype="float32").reshape(2, 5)

# Every open() / os.open() of a watched path with a writing mode or flag (audit event "open").
_WATCHED: set[str] = set()
_WRITES: list[tuple] = []
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _audit(event, args):
    if event != "open" or not _WATCHED or isinstance(args[0], int):
        return
    path, mode, flags = args
    if os.path.abspath(os.fsdecode(path)) in _WATCHED:
        writing = (mode is not None and any(c in mode for c in "wax+")) or (
            flags is not None and flags & _WRITE_FLAGS
        )
        if writing:
            _WRITES.append((path, mode, flags))


sys.addaudithook(_audit)


@contextlib.contextmanager
def _no_write_opens(path):
    _WATCHED.add(os.path.abspath(path))
    _WRITES.clear()
    try:
        yield
    finally:
        _WATCHED.clear()
    assert not _WRITES, f"target opened for writing: {_WRITES}"


def _mlp(seed):
    keras.utils.set_random_seed(seed)
    return tfc.models.digits_mlp(hidden=(6,), input_dim=5, num_classes=3)


def _binary(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((5,)), tfc.layers.BinaryDense(6, name="b"), keras.layers.Dense(3, name="d")]
    )


def _tflite_outputs(path):
    return tfc.tflite_export.TFLiteModel(str(path)).predict(X)


# name -> (file name, model factory, write(model, path), read(path) -> outputs on X)
WRITERS = {
    "pack": (
        "m.tfcp",
        _mlp,
        tfc.pack,
        lambda path: np.asarray(tfc.unpack(path)(X)),
    ),
    "save_packed": (
        "m.npz",
        _binary,
        save_packed,
        lambda path: np.asarray(load_packed(path)(X)),
    ),
    "tflite_export": (
        "m.tflite",
        _mlp,
        lambda model, path: tfc.tflite_export.export(model, path, verify=False, latency_runs=0),
        _tflite_outputs,
    ),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_create_and_overwrite_never_open_the_target(name, tmp_path):
    filename, factory, write, read = WRITERS[name]
    target = tmp_path / filename
    first, second = factory(0), factory(1)
    with _no_write_opens(target):
        write(first, target)
    old_bytes = target.read_bytes()
    expected = read(target)
    with open(target, "rb") as old, _no_write_opens(target):
        write(second, target)
        # The old file was replaced, not rewritten: an open handle still reads the old bytes.
        assert old.read() == old_bytes
        assert os.fstat(old.fileno()).st_ino != os.stat(target).st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == [filename]
    assert target.read_bytes() != old_bytes
    assert not np.array_equal(read(target), expected)


class _FailingFile(io.FileIO):
    """A file whose writes fail with EFBIG once ``limit`` bytes are reached (a full disk)."""

    limit = 0

    def write(self, data):
        room = self.limit - self.tell()
        if len(data) > room:
            if room > 0:
                super().write(memoryview(data)[:room])
            raise OSError(errno.EFBIG, "File too large (injected)")
        return super().write(data)


def _failing_fdopen(limit):
    def fdopen(fd, mode="r", *args, **kwargs):
        raw = _FailingFile(fd, "w")
        raw.limit = limit
        buffered = io.BufferedWriter(raw)
        if "b" in mode:
            return buffered
        return io.TextIOWrapper(
            buffered, encoding=kwargs.get("encoding"), newline=kwargs.get("newline")
        )

    return fdopen


@pytest.fixture(scope="module")
def tflite_bytes():
    return tfc.tflite_export.convert(_mlp(1))


def _check_failed_write(name, tmp_path, monkeypatch, tflite_bytes, *, limit, where, existing):
    filename, factory, write, read = WRITERS[name]
    target = tmp_path / filename
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    if existing:
        write(factory(0), target)
        before, expected = target.read_bytes(), read(target)
    if name == "tflite_export":  # the converted bytes, without converting again
        module = sys.modules["tfcompress.export.tflite"]  # the package re-exports a function
        monkeypatch.setattr(module, "convert", lambda *a, **k: tflite_bytes)
    if where == "write":
        monkeypatch.setattr(os, "fdopen", _failing_fdopen(limit))
    else:

        def fail(*args, **kwargs):
            raise OSError(errno.EIO, f"{where} failed (injected)")

        monkeypatch.setattr(os, where, fail)
    try:
        with pytest.raises(OSError, match="injected"):
            write(factory(1), target)
    finally:
        monkeypatch.undo()
    if existing:
        assert target.read_bytes() == before
        np.testing.assert_array_equal(read(target), expected)
        assert sorted(p.name for p in tmp_path.iterdir()) == [filename]
    else:
        assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def sizes(tmp_path_factory, tflite_bytes):
    """Bytes each writer produces for the model it writes second."""
    folder = tmp_path_factory.mktemp("sizes")
    out = {"tflite_export": len(tflite_bytes)}
    for name in ("pack", "save_packed"):
        filename, factory, write, _ = WRITERS[name]
        write(factory(1), folder / filename)
        out[name] = (folder / filename).stat().st_size
    return out


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=st.sampled_from(sorted(WRITERS)),
    fraction=st.floats(0, 0.999),
    where=st.sampled_from(["write", "write", "fsync", "replace"]),
    existing=st.booleans(),
)
def test_a_failed_write_keeps_the_previous_file(
    tmp_path_factory, tflite_bytes, sizes, name, fraction, where, existing
):
    tmp_path = tmp_path_factory.mktemp(name)
    size = sizes[name]
    with pytest.MonkeyPatch.context() as monkeypatch:
        _check_failed_write(
            name,
            tmp_path,
            monkeypatch,
            tflite_bytes,
            limit=int(fraction * size),
            where=where,
            existing=existing,
        )


@pytest.mark.parametrize("name", list(WRITERS))
@pytest.mark.parametrize("existing", [False, True])
def test_write_failing_at_every_stage(name, existing, tmp_path, monkeypatch, tflite_bytes):
    for limit, where in [(0, "write"), (200, "write"), (0, "fsync"), (0, "replace")]:
        _check_failed_write(
            name, tmp_path, monkeypatch, tflite_bytes, limit=limit, where=where, existing=existing
        )


def test_file_size_limit_in_a_subprocess(tmp_path):
    # The kernel refuses the write (RLIMIT_FSIZE -> EFBIG), as on a full disk or quota.
    script = textwrap.dedent(
        """
        import os, resource, sys
        from pathlib import Path
        import keras, numpy as np
        import tfcompress as tfc
        from tfcompress.packing import load_packed, save_packed

        folder = Path(sys.argv[1])
        x = np.ones((2, 5), "float32")
        def mlp(seed):
            keras.utils.set_random_seed(seed)
            return tfc.models.digits_mlp(hidden=(64,), input_dim=5, num_classes=3)
        def binary(seed):
            keras.utils.set_random_seed(seed)
            return keras.Sequential([keras.Input((5,)), tfc.layers.BinaryDense(64),
                                     keras.layers.Dense(3)])
        flat = tfc.tflite_export.convert(mlp(1))
        sys.modules["tfcompress.export.tflite"].convert = lambda *a, **k: flat
        export = lambda m, p: tfc.tflite_export.export(m, p, verify=False, latency_runs=0)
        cases = [("pack", "m.tfcp", mlp, tfc.pack, lambda p: tfc.unpack(p)(x)),
                 ("save_packed", "m.npz", binary, save_packed, lambda p: load_packed(p)(x)),
                 ("export", "m.tflite", mlp, export,
                  lambda p: tfc.tflite_export.TFLiteModel(str(p)).predict(x))]
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        for name, filename, factory, write, read in cases:
            target = folder / name / filename
            target.parent.mkdir()
            write(factory(0), target)
            before, expected = target.read_bytes(), np.asarray(read(target))
            resource.setrlimit(resource.RLIMIT_FSIZE, (512, hard))
            try:
                write(factory(1), target)
            except OSError as error:
                print(name, "refused:", error.strerror)
            else:
                raise SystemExit(f"{name}: the write did not fail")
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            assert target.read_bytes() == before, name
            assert np.array_equal(np.asarray(read(target)), expected), name
            assert [p.name for p in target.parent.iterdir()] == [filename], name
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "ok", done.stdout
    assert done.stdout.count("refused: File too large") == 3, done.stdout

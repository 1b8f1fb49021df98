"""File I/O shared by every writer and loader: one atomic writer, one error for unreadable files.

Every file tfcompress writes (``.tfcp`` archives, packed stores, ``.tflite`` files, compiled
kernels, plots, results) goes through :func:`atomic_write` or :func:`atomic_path`: the bytes go
to a temporary file in the target's folder, which is flushed and ``fsync``-ed, then
``os.replace``-d onto the target. ``os.replace`` is atomic on POSIX and Windows within one file
system, so a reader sees either the previous file or the complete new one; a write that fails
midway (full disk, file-size limit, killed process, lost mount) leaves the previous file
untouched and removes the temporary file. The target itself is never opened for writing.

Every loader of ours raises :class:`UnreadableFileError` when a file's bytes are not what they
should be.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "UnreadableFileError",
    "atomic_path",
    "atomic_write",
    "write_bytes",
    "write_text",
]

_TEMP_SUFFIX = ".tmp"


class UnreadableFileError(ValueError):
    """A file (or bytes) that a tfcompress loader cannot read: corrupt, truncated, wrong format.

    Raised by :func:`tfcompress.unpack`, :func:`tfcompress.packing.loads`,
    :func:`tfcompress.packing.load_packed` and the command line's loaders for any malformed
    content: bad magic bytes, an unsupported version, a checksum mismatch, truncation, a
    config that cannot be deserialized, a tensor that does not match the model. A file that
    does not exist still raises ``FileNotFoundError``.

    Attributes:
        path: The file (``None`` when bytes were given without a file).
        reason: What is wrong, in words.

    Example:
        >>> try:
        ...     model = tfc.unpack("model.tfcp")
        ... except tfc.UnreadableFileError as error:
        ...     print(error.path, error.reason)
    """

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else os.fspath(path)
        self.reason = str(reason)
        where = "the given bytes" if self.path is None else repr(self.path)
        super().__init__(f"cannot read {where}: {self.reason}")

    def __reduce__(self):  # keep (path, reason) through pickling (multiprocessing)
        return type(self), (self.path, self.reason)


def _real_target(path: str | os.PathLike) -> Path:
    target = Path(path)
    if target.is_symlink():
        # Replace the file the link points to, not the link.
        target = target.resolve()
    if target.is_dir():
        raise IsADirectoryError(f"path={os.fspath(path)!r} is a directory; give a file name")
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"path={os.fspath(path)!r}: the directory {str(target.parent)!r} does not exist"
        )
    return target


def _create_temp(target: Path) -> tuple[int, Path]:
    """A new, empty, exclusively created file next to ``target``; ``(fd, path)``."""
    for _ in range(100):
        temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}")
        try:
            # 0o666 minus the umask: the permissions a plain open(path, "w") would give.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            fd = os.open(temp, flags, 0o666)
        except FileExistsError:
            continue
        return fd, temp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target))


def _keep_mode(temp: Path, target: Path) -> None:
    # Overwriting keeps the previous file's permission bits.
    with contextlib.suppress(FileNotFoundError):
        os.chmod(temp, stat.S_IMODE(os.stat(target).st_mode))


def _sync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not every platform or file system allows it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _finish(temp: Path, target: Path) -> None:
    _keep_mode(temp, target)
    os.replace(temp, target)
    _sync_folder(target.parent)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike,
    mode: str = "wb",
    *,
    encoding: str | None = None,
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Opens a temporary file next to ``path``; on a clean exit it atomically becomes ``path``.

    The temporary file (``.NAME.<random>.tmp`` in the same folder) is flushed and ``fsync``-ed
    before ``os.replace`` puts it in place. If the block raises, or the flush, sync or rename
    fails, the temporary file is removed, ``path`` is left as it was, and the error propagates.

    Args:
        path: The file to create or replace. A symbolic link is followed: the file it points to
            is replaced. Overwriting keeps the previous file's permission bits.
        mode: ``"wb"`` (binary) or ``"w"`` (text).
        encoding: Text mode only; default ``"utf-8"``.
        newline: Text mode only, as for :func:`open`.

    Yields:
        The open file object to write to.

    Raises:
        ValueError: ``mode`` is not ``"wb"`` or ``"w"``, or text options with ``"wb"``.
        IsADirectoryError: ``path`` is a directory.
        FileNotFoundError: ``path``'s folder does not exist.
        OSError: The write, sync or rename failed (``path`` is unchanged).

    Example:
        >>> with atomic_write("results.json", "w") as f:
        ...     json.dump(results, f)
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    if mode == "wb" and (encoding is not None or newline is not None):
        raise ValueError("encoding and newline apply to text mode ('w') only")
    target = _real_target(path)
    fd, temp = _create_temp(target)
    try:
        kwargs = {} if mode == "wb" else {"encoding": encoding or "utf-8", "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _finish(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` for a tool that writes by name (a compiler, a plotter).

    The block fills the yielded path (an empty file when the block starts); on a clean exit
    the file is ``fsync``-ed and atomically replaces ``path``. On any error the temporary file
    is removed and ``path`` is unchanged.

    Args:
        path: The file to create or replace.

    Yields:
        The temporary file's path, in ``path``'s folder.

    Raises:
        IsADirectoryError: ``path`` is a directory.
        FileNotFoundError: ``path``'s folder does not exist, or the block removed the file.
        OSError: The sync or rename failed (``path`` is unchanged).

    Example:
        >>> with atomic_path(library) as temp:
        ...     subprocess.run(["c++", "-shared", "ops.cc", "-o", str(temp)], check=True)
    """
    target = _real_target(path)
    fd, temp = _create_temp(target)
    os.close(fd)
    try:
        yield temp
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _finish(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> int:
    """Atomically writes ``data`` to ``path`` (see :func:`atomic_write`); returns the size.

    Example:
        >>> write_bytes("model.tflite", flatbuffer)
    """
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return len(data)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> int:
    """Atomically writes ``text`` to ``path`` (see :func:`atomic_write`); returns the characters.

    Example:
        >>> write_text("results.json", json.dumps(rows, indent=2))
    """
    with atomic_write(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return len(text)

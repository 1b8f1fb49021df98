"""Compiles the C++ kernels on first use into a per-user cache, and loads them.

The shared library is built against the installed TensorFlow with
``tf.sysconfig.get_compile_flags()`` / ``get_link_flags()`` and cached under a name keyed by the
TensorFlow version and a hash of the sources, flags and compiler, so a TensorFlow upgrade or a
source change triggers one rebuild and every later process just loads the file. Nothing here may
break ``import tfcompress``: without a compiler, or when the build or load fails, :func:`load`
returns ``None``, logs the reason once, and the ops use their pure-TensorFlow fallbacks.

Environment variables:
    TFCOMPRESS_DISABLE_KERNELS: ``1``/``true``/``yes`` forces the pure-TensorFlow fallbacks.
    TFCOMPRESS_CACHE_DIR: where compiled kernels are cached (default
        ``$XDG_CACHE_HOME/tfcompress`` or ``~/.cache/tfcompress``; a ``kernels`` folder inside).
    CXX: the C++ compiler to use (default: the first of ``c++``, ``g++``, ``clang++`` on PATH).
    TFCOMPRESS_BINARY_ISA: the code path of the compiled ops (read per call by
        :mod:`tfcompress.kernels.tf.binary_ops`, not here).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import tensorflow as tf

from tfcompress.core.io import atomic_path

__all__ = [
    "ENV_CACHE_DIR",
    "ENV_DISABLE",
    "KernelBuildError",
    "build",
    "cache_dir",
    "kernels_disabled",
    "library_path",
    "load",
]

ENV_DISABLE = "TFCOMPRESS_DISABLE_KERNELS"
ENV_CACHE_DIR = "TFCOMPRESS_CACHE_DIR"
# binary_kernels.cc: the per-ISA inner loops, free of TensorFlow headers (compiles fast).
_SOURCES = ("binary_ops.cc", "binary_kernels.cc")
# -w: TensorFlow's headers emit hundreds of deprecation warnings that say nothing about our code.
_CXX_FLAGS = ("-O3", "-shared", "-fPIC", "-w")
_BUILD_TIMEOUT_S = 600

logger = logging.getLogger("tfcompress.ops.tf")

_lock = threading.Lock()
_state: dict[str, object] = {"tried": False, "module": None, "reason": None}


class KernelBuildError(RuntimeError):
    """The C++ kernels could not be compiled or loaded (the message says why)."""


def kernels_disabled() -> bool:
    """True when ``TFCOMPRESS_DISABLE_KERNELS`` asks for the pure-TensorFlow fallbacks."""
    return os.environ.get(ENV_DISABLE, "").strip().lower() in ("1", "true", "yes", "on")


def cache_dir() -> Path:
    """The folder compiled kernels are cached in (created on demand)."""
    root = os.environ.get(ENV_CACHE_DIR)
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "tfcompress"
    return base / "kernels"


def _source_paths() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [here / s for s in _SOURCES]


def _compiler() -> str | None:
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx) or (cxx if os.path.isfile(cxx) else None)
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _flags() -> tuple[list[str], list[str]]:
    return list(tf.sysconfig.get_compile_flags()), list(tf.sysconfig.get_link_flags())


def library_path(compiler: str | None = None) -> Path:
    """Where the library for this TensorFlow, these sources and this compiler is cached."""
    compile_flags, link_flags = _flags()
    digest = hashlib.sha256()
    for src in _source_paths():
        digest.update(src.read_bytes())
    for part in (
        tf.__version__,
        sys.platform,
        compiler or "",
        *_CXX_FLAGS,
        *compile_flags,
        *link_flags,
    ):
        digest.update(part.encode() + b"\0")
    return cache_dir() / f"tfcompress_kernels-tf{tf.__version__}-{digest.hexdigest()[:16]}.so"


def build(force: bool = False) -> Path:
    """Compiles the kernels into the cache (once) and returns the library's path.

    Args:
        force: Rebuild even if a cached library exists.

    Returns:
        The path of the compiled shared library.

    Raises:
        KernelBuildError: No compiler was found or compilation failed (message has the log).
    """
    cxx = _compiler()
    if cxx is None:
        raise KernelBuildError("no C++ compiler found (set CXX or put c++/g++/clang++ on PATH)")
    target = library_path(cxx)
    if target.exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    compile_flags, link_flags = _flags()
    logger.info("tfcompress: compiling custom TF kernels (one time, ~30 s): %s", target)
    start = time.perf_counter()
    # Compile under a private name, then replace atomically: concurrent processes never load
    # a partial file, and a failed build leaves no temporary file behind.
    with atomic_path(target) as tmp:
        cmd = [
            cxx,
            *_CXX_FLAGS,
            *compile_flags,
            *map(str, _source_paths()),
            "-o",
            str(tmp),
            *link_flags,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise KernelBuildError(f"running {cxx} failed: {err}") from err
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout)[-4000:]
            raise KernelBuildError(
                f"compiling the kernels failed (exit {proc.returncode}):\n{tail}"
            )
    logger.info("tfcompress: kernels compiled in %.1f s", time.perf_counter() - start)
    return target


def load() -> ModuleType | None:
    """Returns the loaded op library, building it first if needed; ``None`` means fallback.

    The first failure is logged once as a warning (with the reason) and remembered; later calls
    return ``None`` at once. ``TFCOMPRESS_DISABLE_KERNELS`` is checked on every call.
    """
    if kernels_disabled():
        return None
    if _state["tried"]:
        return _state["module"]  # type: ignore[return-value]
    with _lock:
        if not _state["tried"]:
            try:
                _state["module"] = tf.load_op_library(str(build()))
                _mark_not_differentiable()
            except Exception as err:  # any failure means: fall back, never break the caller
                _state["reason"] = str(err)
                logger.warning(
                    "tfcompress: compiled kernels unavailable, using the pure-TensorFlow "
                    "fallback ops (same results, slower). Reason: %s",
                    err,
                )
            _state["tried"] = True
    return _state["module"]  # type: ignore[return-value]


_OPS = (
    "TfcPackBits",
    "TfcUnpackBits",
    "TfcBinaryMatmul",
    "TfcBinaryConv2D",
    "TfcKernelIsa",
    "TfcSupportedIsas",
)


def _mark_not_differentiable() -> None:
    # Inference-only ops: gradients through them are None (like the fallbacks' sign step),
    # rather than a LookupError deep inside a tape.
    for op in _OPS:
        with contextlib.suppress(KeyError):  # already registered by an earlier load
            tf.no_gradient(op)


def failure_reason() -> str | None:
    """Why the last :func:`load` fell back (``None`` if it did not, or was never tried)."""
    return _state["reason"]  # type: ignore[return-value]


def _reset_for_tests() -> None:
    with _lock:
        _state.update(tried=False, module=None, reason=None)

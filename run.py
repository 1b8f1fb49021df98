#!/usr/bin/env python3
"""One-command entry points that do their own set-up: ``python3 run.py demo|test|bench``.

The first run creates ``.venv`` next to this file and installs tfcompress into
it (editable, with the ``test`` extra); later runs reuse it and reinstall only
when ``pyproject.toml`` changes. Needs only Python 3.10+ with pip and venv.

    python3 run.py demo                 # tfcompress demo (extra args are passed on)
    python3 run.py test                 # import rules, the test suite (2 workers), its JAX subset
    python3 run.py test ARGS            # import rules, then pytest ARGS on $KERAS_BACKEND
    python3 run.py bench suite --quick  # the benchmark suite (tfcompress bench suite --quick)
    python3 run.py bench qat            # python benchmarks/qat.py (needs the bench extra)

``test`` first checks the import rules of ``pyproject.toml`` (``lint-imports``:
core below the technique packages, techniques independent, no cycles) and
stops there if one is broken. Without arguments, it then runs the whole suite
on TensorFlow and then, in a
second pytest process with KERAS_BACKEND=jax, the tests marked ``jax`` (layers,
quantizers, schedules, pruning and distillation callbacks); it fails if either
fails. Run only the JAX subset with ``KERAS_BACKEND=jax python3 run.py test -m jax``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("TFCOMPRESS_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def _log(message: str) -> None:
    print(f"[run.py] {message}", flush=True)


def _ensure_venv(extras: str) -> None:
    if sys.version_info < (3, 10):  # noqa: UP036 (run.py must explain, not crash, on old Pythons)
        sys.exit(f"tfcompress needs Python 3.10 or newer; this is {sys.version.split()[0]}")
    stamp = VENV / f".tfcompress-{extras.replace(',', '-')}"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        _log(f"creating a virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    _log(f"installing tfcompress[{extras}] and its dependencies (first run: a few minutes)")
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[{extras}]"], check=True)
    stamp.write_text(wanted)


def _test_both_backends(cmd: list[str], env: dict[str, str]) -> int:
    # Two workers (pytest-xdist) for the TensorFlow suite: most of its time is
    # single-threaded graph tracing and TFLite conversion, so 2 cores halve it.
    parallel = [*cmd, "-n", "2"]
    _log(" ".join(parallel))
    code = subprocess.call(parallel, cwd=ROOT, env=env)
    check = [str(PYTHON), "-c", "import jax"]
    if subprocess.call(check, cwd=ROOT, stderr=subprocess.DEVNULL) != 0:
        _log("jax is not installed (it needs Python 3.11+): skipping the JAX-backend subset")
        return code
    # Only the files that mark tests for JAX: collecting the rest costs ~40 s for nothing.
    marked = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").glob("test_*.py")
        if "mark.jax" in path.read_text()
    )
    jax_cmd = [*cmd, "-m", "jax", *marked]
    _log("KERAS_BACKEND=jax " + " ".join(jax_cmd))
    jax_code = subprocess.call(jax_cmd, cwd=ROOT, env={**env, "KERAS_BACKEND": "jax"})
    return code or jax_code


def _lint_imports(env: dict[str, str]) -> int:
    cmd = [str(BIN / ("lint-imports.exe" if os.name == "nt" else "lint-imports"))]
    _log(" ".join(cmd))
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    if code:
        _log("import rules broken (see above; the contracts are in pyproject.toml): no tests run")
    return code


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "bench"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    env = {
        **os.environ,
        "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    if command == "demo":
        _ensure_venv("test")
        cmd = [str(PYTHON), "-m", "tfcompress", "demo", *rest]
    elif command == "test":
        _ensure_venv("test")
        if code := _lint_imports(env):
            return code
        cmd = [str(PYTHON), "-m", "pytest", *rest]
        if not rest:
            return _test_both_backends(cmd, env)
    else:
        _ensure_venv("test,bench")
        if not rest:
            print(
                "usage: python3 run.py bench suite [--quick] ... | bench NAME [args] (NAME: a file in benchmarks/)"
            )
            return 2
        if rest[0] == "suite":  # the standard benchmark lives in the package
            cmd = [str(PYTHON), "-m", "tfcompress", "bench", *rest]
        else:
            cmd = [str(PYTHON), str(ROOT / "benchmarks" / f"{rest[0]}.py"), *rest[1:]]
    _log(" ".join(cmd))
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

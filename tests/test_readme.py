"""The README's fenced Python blocks run as written, in order, in one namespace.

Each ```` ```python ```` block of README.md is executed in a fresh temporary
directory (files the blocks write land there), sharing names with the blocks
before it, as a reader pasting them into one session would. Training is kept
short: every ``fit`` runs at most ``TFCOMPRESS_README_EPOCHS`` epochs (default
1); ``TFCOMPRESS_README_EPOCHS=full`` runs the epochs the README writes.

    python3 run.py test tests/test_readme.py
    TFCOMPRESS_README_EPOCHS=full python3 run.py test tests/test_readme.py

A pytest-markdown-docs style runner (one test per block) does not fit here:
later blocks use the models trained by earlier ones, so each test would have
to re-run every block before it.
"""

from __future__ import annotations

import os
import re
import traceback
from pathlib import Path

import keras
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number of the block's first code line, code)`` for each Python fence."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _FENCE.finditer(text)]


def epoch_cap() -> int | None:
    """The epoch limit for README blocks (None = as written), from the environment."""
    raw = os.environ.get("TFCOMPRESS_README_EPOCHS", "1").strip().lower()
    if raw == "full":
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(
            f"TFCOMPRESS_README_EPOCHS must be a positive integer or 'full', got {raw!r}"
        )
    return int(raw)


def test_finds_every_python_block():
    text = "a\n```python\nx = 1\n```\n\n```bash\nls\n```\n```python\ny = 2\n\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (10, "y = 2\n\n")]


def test_epoch_cap_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("TFCOMPRESS_README_EPOCHS", raising=False)
    assert epoch_cap() == 1
    monkeypatch.setenv("TFCOMPRESS_README_EPOCHS", "full")
    assert epoch_cap() is None
    monkeypatch.setenv("TFCOMPRESS_README_EPOCHS", "0")
    with pytest.raises(ValueError, match=r"TFCOMPRESS_README_EPOCHS.*'0'"):
        epoch_cap()


@pytest.mark.slow
def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch):
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 10, f"expected the README's Python blocks, found {len(blocks)}"
    cap = epoch_cap()
    if cap is not None:
        fit = keras.Model.fit

        def short_fit(self, *args, **kwargs):
            if len(args) >= 4:  # fit(x, y, batch_size, epochs, ...)
                args = (*args[:3], min(args[3], cap), *args[4:])
            else:
                kwargs["epochs"] = min(kwargs.get("epochs", 1), cap)
            kwargs.setdefault("verbose", 0)
            return fit(self, *args, **kwargs)

        monkeypatch.setattr(keras.Model, "fit", short_fit)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for line, code in blocks:
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception:
            pytest.fail(
                f"README.md block at line {line} failed:\n{code}\n{traceback.format_exc()}",
                pytrace=False,
            )

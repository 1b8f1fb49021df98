"""Builds the language-model corpus that tfcompress ships (run once; the output is committed).

The corpus is the 168 top-level modules (``Lib/*.py``) of the CPython 3.11.7
standard library, 4.7 MB of real Python source under the PSF license. Files are
sorted by name; every tenth (index 9, 19, ...) is held out for evaluation, the
rest is training text. Each split is the files' bytes joined by a blank line,
compressed with xz (preset 9). A manifest records each file, its split and the
SHA-256 of both splits, so the data can be checked; the license travels with it.

    python3 run.py bench build_lm_corpus [--stdlib PATH]

Writes ``tfcompress/data/stdlib_corpus.{train,test}.xz``,
``stdlib_corpus.json`` and ``stdlib_corpus.LICENSE.txt``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import sys
import sysconfig
from pathlib import Path

from tfcompress.core.io import write_bytes, write_text

DATA = Path(__file__).resolve().parent.parent / "tfcompress" / "data"
HELD_OUT_EVERY = 10


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"])
    args = parser.parse_args(argv)
    stdlib = Path(args.stdlib)
    if sys.version_info[:3] != (3, 11, 7):
        print(f"note: this Python is {sys.version.split()[0]}; the shipped corpus is 3.11.7's")
    files = sorted(stdlib.glob("*.py"))
    if not files:
        raise SystemExit(f"--stdlib {stdlib}: no *.py files there")
    splits: dict[str, list[bytes]] = {"train": [], "test": []}
    manifest_files = []
    for index, path in enumerate(files):
        split = "test" if index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else "train"
        data = path.read_bytes()
        splits[split].append(data)
        manifest_files.append({"name": path.name, "bytes": len(data), "split": split})
    manifest = {
        "source": f"CPython {sys.version.split()[0]} standard library, Lib/*.py",
        "license": "PSF License Agreement (stdlib_corpus.LICENSE.txt)",
        "held_out": f"every {HELD_OUT_EVERY}th file in name order (index % {HELD_OUT_EVERY} == 9)",
        "joined_by": "\\n\\n",
        "splits": {},
        "files": manifest_files,
    }
    for split, parts in splits.items():
        text = b"\n\n".join(parts)
        packed = lzma.compress(text, preset=9)
        write_bytes(DATA / f"stdlib_corpus.{split}.xz", packed)
        manifest["splits"][split] = {
            "files": len(parts),
            "bytes": len(text),
            "xz_bytes": len(packed),
            "sha256": hashlib.sha256(text).hexdigest(),
        }
        print(f"{split}: {len(parts)} files, {len(text):,} bytes, xz {len(packed):,} bytes")
    write_text(DATA / "stdlib_corpus.json", json.dumps(manifest, indent=1) + "\n")
    write_bytes(DATA / "stdlib_corpus.LICENSE.txt", (stdlib / "LICENSE.txt").read_bytes())


if __name__ == "__main__":
    main()

"""tfcompress: model compression for Keras 3 on TensorFlow.

Layers you swap in, callbacks you add to ``model.fit``, model transforms that
keep trained weights, and a TFLite/LiteRT export verified against Keras.
"""

import os as _os
import sys as _sys
from typing import TYPE_CHECKING as _TYPE_CHECKING


def _cli_startup() -> bool:
    """True while ``python -m tfcompress`` or the ``tfcompress`` script starts.

    The command line then imports TensorFlow only for the commands that need it, after
    setting its log level, so ``--help`` answers at once. Everywhere else ``import
    tfcompress`` imports every module, which registers every layer with Keras.
    """
    argv0 = _sys.argv[0] if _sys.argv else ""
    if argv0 == "-m":  # CPython is locating the module of `python -m MODULE`
        original = list(getattr(_sys, "orig_argv", []))
        module = original[original.index("-m") + 1] if "-m" in original[:-1] else ""
        return module in ("tfcompress", "tfcompress.cli", "tfcompress.__main__")
    return _os.path.basename(argv0).removesuffix(".exe") == "tfcompress"


_load_everything = globals().get("_load_everything", False)  # kept across load_all's reload

if _TYPE_CHECKING or _load_everything or not _cli_startup():
    from tfcompress import allocate as allocate
    from tfcompress import callbacks as callbacks
    from tfcompress import datasets as datasets
    from tfcompress import distribute as distribute
    from tfcompress import layers as layers
    from tfcompress import models as models
    from tfcompress import oneshot as oneshot
    from tfcompress import ops as ops
    from tfcompress import optimizers as optimizers
    from tfcompress import packing as packing
    from tfcompress import quantizers as quantizers
    from tfcompress import reporting as reporting
    from tfcompress import schedules as schedules
    from tfcompress import tflite_export as tflite_export
    from tfcompress import transforms as transforms
    from tfcompress.binary.binarize import binarize_model as binarize_model
    from tfcompress.clustering.cluster_model import cluster_model as cluster_model
    from tfcompress.compact.replace import compact_model as compact_model
    from tfcompress.compact.transferred_convert import to_transferred as to_transferred
    from tfcompress.core.io import UnreadableFileError as UnreadableFileError
    from tfcompress.lowrank.factorize import factorize_model as factorize_model
    from tfcompress.packing import pack as pack
    from tfcompress.packing import unpack as unpack
    from tfcompress.pruning.constraint import remove_masks as remove_masks
    from tfcompress.pruning.shrink import shrink_model as shrink_model
    from tfcompress.pruning.snip import prune_at_init as prune_at_init
    from tfcompress.quantization.quantize_model import quantize_model as quantize_model
    from tfcompress.reporting import summary as summary
    from tfcompress.structured.convert import structure_model as structure_model


def load_all() -> None:
    """Imports every module (registering every layer), as ``import tfcompress`` does.

    Only needed in the command line, which starts without them.
    """
    global _load_everything
    if not _load_everything:
        import importlib

        _load_everything = True
        importlib.reload(_sys.modules[__name__])


def __getattr__(name: str):
    """Public names on first use (only reached when started as the command line)."""
    if name in __all__ and not _load_everything:
        load_all()
        return globals()[name]
    raise AttributeError(f"module 'tfcompress' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "UnreadableFileError",
    "__version__",
    "allocate",
    "binarize_model",
    "callbacks",
    "cluster_model",
    "compact_model",
    "datasets",
    "distribute",
    "factorize_model",
    "layers",
    "models",
    "oneshot",
    "ops",
    "optimizers",
    "pack",
    "packing",
    "prune_at_init",
    "quantize_model",
    "quantizers",
    "remove_masks",
    "reporting",
    "schedules",
    "shrink_model",
    "structure_model",
    "summary",
    "tflite_export",
    "to_transferred",
    "transforms",
    "unpack",
]

"""Keeping TensorFlow's native (C++/absl) log lines off the terminal unless something fails."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["native_log_capture"]


@contextlib.contextmanager
def native_log_capture() -> Iterator[None]:
    """Sends file descriptor 2 to a temporary file for the duration of the block.

    TensorFlow's C++ code (the converter, Grappler, absl's start-up lines) writes to
    the process's stderr directly, past ``sys.stderr``. On an exception the captured
    text (its last 20,000 characters) is written back to stderr before it propagates,
    so a failure still shows what TensorFlow said.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-20000:])
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def start_tensorflow_quietly() -> None:
    """Imports TensorFlow and Keras without their start-up logs.

    For command lines, which import them only for the commands that need them (so
    ``--help`` stays instant). absl and the device probe print to the process's
    stderr while TensorFlow starts; those lines are dropped unless the import fails.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with native_log_capture():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # the device probe logs once, here
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)

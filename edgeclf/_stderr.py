"""Filter what native libraries print straight to file descriptor 2 (their C++ start-up log lines).

LiteRT prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` and the TFLite converter
prints ``fully_quantize: 0, inference_type: 6, ...`` with their own loggers, which ignore
``TF_CPP_MIN_LOG_LEVEL`` and Python's logging. :func:`filtered_native_stderr` captures fd 2 around
such a call and writes back every line except those its predicate drops, so real errors still
show (after the call). edgeclf hides INFO lines when ``TF_CPP_MIN_LOG_LEVEL`` >= 1 (:func:`info_hidden`),
the one switch the CLI sets (quiet by default, ``-v`` shows everything).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def min_log_level() -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as an int (0 = everything, 1 = no INFO, 2 = no WARNING, 3 = no ERROR); 0 if unset or junk."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def info_hidden() -> bool:
    """True when INFO log lines should be hidden (``TF_CPP_MIN_LOG_LEVEL`` >= 1)."""
    return min_log_level() >= 1


@contextmanager
def filtered_native_stderr(drop: Callable[[str], bool]) -> Iterator[None]:
    """Capture fd 2 inside the block; afterwards write back the captured lines for which ``drop`` is False.

    Python-level writes to ``sys.stderr`` inside the block are flushed first and kept as well (unless
    dropped). Output of other threads during the block is delayed, not lost. If fd 2 cannot be
    duplicated (an unusual embedding), the block runs unfiltered.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            kept = "".join(line for line in text.splitlines(keepends=True) if not drop(line))
            if kept:
                os.write(2, kept.encode("utf-8"))

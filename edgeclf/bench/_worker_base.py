"""What every bench worker kind shares: the phase/result file, the input batches, the accuracy chunk.

Imported by :mod:`edgeclf.bench.worker` (runtime kinds, the ``python -m`` entry point) and
:mod:`edgeclf.bench._keras_worker` (TensorFlow kinds), so neither imports the other.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import numpy as np

from edgeclf._io import write_json
from edgeclf.errors import one_line
from edgeclf.runtime.base import flip_views

PARENT_ENV = "EDGECLF_BENCH_PID"  # the bench's pid, set by the runner for its workers (worker.die_with_parent)

ACCURACY_CHUNK = 256  # images per call in the accuracy pass


def batch_of(images: np.ndarray, n: int) -> np.ndarray:
    """float32 (n, H, W, C): the first n of uint8 (N, H, W, C) ``images`` (repeated if N < n), pixel values 0..255."""
    reps = -(-n // len(images))
    return np.ascontiguousarray(np.concatenate([images[:n]] * reps)[:n], dtype=np.float32)


def views(x: np.ndarray, tta: bool) -> np.ndarray:
    """``x`` (N, H, W, C) as the engine sees it: unchanged, or with ``tta`` followed by its horizontal
    mirrors, (2N, H, W, C) (:func:`edgeclf.runtime.base.flip_views`, what ``Classifier.tta`` runs)."""
    return flip_views(x) if tta else x


class Phase:
    """Tracks the current phase and rewrites the result JSON at ``path`` at each step.

    ``result`` is the dict the parent reads: ``{"ok": bool, "phase": str, "error"?: str, ...measurements}``.
    """

    def __init__(self, path: Path) -> None:
        self.path, self.result = path, {"ok": False, "phase": "start"}

    def enter(self, name: str) -> None:
        """Record that phase ``name`` starts (a crash inside it is attributed to it)."""
        self.result["phase"] = name
        write_json(self.path, self.result)

    def finish(self) -> None:
        """Record success."""
        self.result.update(ok=True, phase="done")
        write_json(self.path, self.result)

    def fail(self, exc: BaseException) -> None:
        """Record ``exc`` as ``"Type: first line"`` plus a short traceback."""
        name, message = type(exc).__name__, one_line(exc)
        self.result.update(ok=False, error=name if message == name else f"{name}: {message}",
                           traceback=traceback.format_exc(limit=8))
        write_json(self.path, self.result)

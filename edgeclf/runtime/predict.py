"""Batch prediction over image files: ``predict_files(classifier, paths, ...) -> PredictionReport``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeclf.errors import ConfigError, PredictError
from edgeclf.metrics import confusion_matrix
from edgeclf.preprocess import to_model_input
from edgeclf.runtime.base import Classifier, top_k_indices
from edgeclf.runtime.sources import expand_image_paths, folder_labels, iter_images

log = logging.getLogger("edgeclf.runtime")


@dataclass
class PredictionReport:
    """Predictions for a set of image files.

    Attributes:
        files: the images that were classified, in order (N).
        labels: class names in index order (C).
        topk_idx: int64 (N, k) class indices, most probable first.
        topk_probs: float32 (N, k) their probabilities.
        true_idx: int64 (N,) classes from labelled folders (``<class>/<file>``), or None.
        skipped: ``(file, one-line reason)`` for images that could not be decoded.
        engine, precision, model: what ran.
        tta: whether flip test-time augmentation averaged two views per image.
        seconds: wall time of decoding + preprocessing + inference, s.
    """

    files: list[str]
    labels: list[str]
    topk_idx: np.ndarray
    topk_probs: np.ndarray
    true_idx: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    engine: str = ""
    precision: str = ""
    model: str = ""
    tta: bool = False
    seconds: float = 0.0

    @property
    def labelled(self) -> bool:
        return self.true_idx is not None

    @property
    def top1_acc(self) -> float | None:
        """Top-1 accuracy in [0, 1] on a labelled folder, else None."""
        if self.true_idx is None or len(self.files) == 0:
            return None
        return float(np.mean(self.topk_idx[:, 0] == self.true_idx))

    @property
    def topk_acc(self) -> float | None:
        """Top-k accuracy (k = number of returned classes) on a labelled folder, else None."""
        if self.true_idx is None or len(self.files) == 0:
            return None
        return float(np.mean(np.any(self.topk_idx == self.true_idx[:, None], axis=1)))

    @property
    def confusion_matrix(self) -> np.ndarray | None:
        """int64 (C, C): rows are true classes, columns predicted top-1 classes; None if unlabelled."""
        if self.true_idx is None:
            return None
        return confusion_matrix(self.true_idx, self.topk_idx[:, 0], len(self.labels))

    @property
    def images_per_s(self) -> float:
        return len(self.files) / self.seconds if self.seconds > 0 else 0.0


def predict_files(
    classifier: Classifier,
    paths: Iterable[str | Path],
    batch_size: int = 64,
    top_k: int = 3,
    on_skip: Callable[[str, str], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> PredictionReport:
    """Classify image files, directories (recursive) and glob patterns.

    Images that cannot be decoded are skipped: ``on_skip(file, reason)`` is called for each (by
    default a one-line logging warning). If every image folder is named after a class
    (``<class>/<file>``) the report carries the true labels for top-1 accuracy and a confusion
    matrix.

    Args:
        classifier: a bound classifier.
        paths: files, directories or glob patterns.
        batch_size: images per inference call (>= 1).
        top_k: classes kept per image (>= 1, clipped to the number of classes).
        on_skip: called with ``(file, reason)`` for each undecodable image.
        on_progress: called with the number of files just processed (decoded or skipped).

    Returns:
        a :class:`PredictionReport`.

    Raises:
        SourceError: a path/pattern names nothing.
        PredictError: every image failed to decode.
        ConfigError: ``batch_size`` or ``top_k`` < 1.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    if on_skip is None:
        def on_skip(file: str, reason: str) -> None:
            log.warning("skipped %s", reason)

    files = expand_image_paths(paths)
    true_all = folder_labels(files, classifier.labels)
    spec = classifier.input_spec
    t0 = time.perf_counter()

    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    idx_parts: list[np.ndarray] = []
    prob_parts: list[np.ndarray] = []
    batch = np.empty((batch_size, spec.height, spec.width, spec.channels), dtype=np.float32)
    n_in_batch = 0

    def flush() -> None:
        nonlocal n_in_batch
        if n_in_batch:
            i, p = top_k_indices(classifier.predict(batch[:n_in_batch]), top_k)
            idx_parts.append(i)
            prob_parts.append(p)
            if on_progress is not None:
                on_progress(n_in_batch)
            n_in_batch = 0

    for pos, (f, image, reason) in enumerate(iter_images(files)):
        if image is None:
            skipped.append((str(f), reason or "unreadable"))
            on_skip(str(f), reason or f"{f}: unreadable")
            if on_progress is not None:
                on_progress(1)
            continue
        batch[n_in_batch] = to_model_input(image, spec.height, spec.width, spec.channels)
        n_in_batch += 1
        kept.append(pos)
        if n_in_batch == batch_size:
            flush()
    flush()
    if not kept:
        raise PredictError(f"none of the {len(files)} image(s) could be decoded (first: {skipped[0][1]})")

    k = min(top_k, classifier.num_classes)
    return PredictionReport(
        files=[str(files[i]) for i in kept],
        labels=classifier.labels,
        topk_idx=np.concatenate(idx_parts) if idx_parts else np.zeros((0, k), np.int64),
        topk_probs=np.concatenate(prob_parts) if prob_parts else np.zeros((0, k), np.float32),
        true_idx=None if true_all is None else true_all[kept],
        skipped=skipped,
        engine=classifier.engine,
        precision=classifier.precision,
        model=str(classifier.path),
        tta=classifier.tta,
        seconds=time.perf_counter() - t0,
    )

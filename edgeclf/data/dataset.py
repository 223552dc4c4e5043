"""The in-memory dataset, the image-source interface training and export read through, and the split helpers.

An *image source* is one split of a dataset, in memory (:class:`ArraySplit`) or streamed from
files (:class:`edgeclf.data.stream.FileSplit`). Both offer the same methods, so ``fit``,
evaluation and export calibration/validation take either:

* ``len(source)``, ``source.labels`` (int32 (N,), the listed images' labels),
* :func:`edgeclf.data.pipeline.source_batches` / ``indexed_batches`` -> tf.data of
  (float32 (B, H, W, C) [0, 255], targets rows / indices),
* ``source.sample(n, seed)`` -> (uint8 (M, H, W, C), int32 (M,)) a stratified subset in memory,
* ``source.check()`` -> raises DataError once too many files failed to decode (no-op in memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ArraySplit:
    """One split held in memory: uint8 (N, H, W, C) images ``x`` and int32 (N,) ``labels``.

    (This module imports no TensorFlow: its tf.data pipelines come from
    :func:`edgeclf.data.pipeline.source_batches`.)"""

    x: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """A stratified subset of at most ``n`` images (None = all): (uint8 (M, H, W, C), int32 (M,))."""
        if n is None:
            return self.x, self.labels
        i = stratified_subset(self.labels, n, seed)
        return self.x[i], self.labels[i]

    def check(self) -> None:
        """Nothing to check: every image in memory was decoded."""


@dataclass
class Dataset:
    """Images and integer labels, held in memory.

    Attributes:
        x_train, x_val, x_test: uint8 (N, H, W, C) RGB (C=3) or grey (C=1), 0-255.
        y_train, y_val, y_test: int32 (N,) class indices into ``class_names``.
        class_names: class names in index order.
        name: short dataset name (``cifar10``, ``fashion_mnist`` or the folder name).
        test_split_name: where the test images came from (``"test"``, ``"val"`` or ``"held-out"``).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    name: str
    test_split_name: str = "test"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the images."""
        return tuple(int(v) for v in self.x_train.shape[1:4])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train(self) -> ArraySplit:
        return ArraySplit(self.x_train, self.y_train)

    @property
    def val(self) -> ArraySplit:
        return ArraySplit(self.x_val, self.y_val)

    @property
    def test(self) -> ArraySplit:
        return ArraySplit(self.x_test, self.y_test)

    def summary(self) -> str:
        h, w, c = self.input_shape
        return (f"{self.name}: {len(self.x_train)} train / {len(self.x_val)} val / {len(self.x_test)} "
                f"{self.test_split_name} images, {h}x{w}x{c}, {self.num_classes} classes")


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a stratified random subset of at most ``n`` items (sorted).

    Each class keeps its share of ``n`` (at least one item per class present), so a subset of a
    class-sorted folder is not just its first classes.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.floor(counts / len(labels) * n).astype(int))
    # hand out the remainder to the largest classes so the total is exactly n (when possible)
    for i in np.argsort(-counts)[: max(0, n - int(quota.sum()))]:
        quota[i] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=min(q, cnt), replace=False)
              for c, q, cnt in zip(classes, quota, counts)]
    return np.sort(np.concatenate(picked))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, held_out) with ``fraction`` of every class held out."""
    labels = np.asarray(labels)
    if fraction <= 0:
        return np.arange(len(labels)), np.array([], dtype=np.int64)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * fraction))
        if len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        held.append(idx[:k])
    held_idx = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), held_idx)
    return keep, held_idx


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """``n_samples / (n_classes * count_c)`` per class, as scikit-learn's ``class_weight='balanced'``.

    Classes absent from ``labels`` get weight 0 (they contribute no loss anyway).
    """
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    total = counts.sum()
    return {c: (float(total / (num_classes * counts[c])) if counts[c] else 0.0) for c in range(num_classes)}


def representative_images(x_train: np.ndarray, y_train: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """The representative dataset for int8 calibration: a stratified sample of training images.

    It is drawn from the *training* split (never the test split) and goes through the same
    preprocessing as training (:func:`edgeclf.preprocess.to_model_batch`).

    Returns:
        float32 (min(n, N), H, W, C), values in [0, 255].
    """
    from edgeclf.preprocess import to_model_batch

    idx = stratified_subset(y_train, n, seed)
    h, w, c = x_train.shape[1:4]
    return to_model_batch(x_train[idx], h, w, c)

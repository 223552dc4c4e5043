"""Streaming input pipeline for image folders: tf.data over file paths, decoded batch by batch.

For folders too large to decode into memory (``edgeclf train --stream``; chosen automatically by
:func:`edgeclf.data.use_streaming`). Per split, a tf.data pipeline runs over *indices* of the
listed files:

1. training, no cache: all indices shuffled every epoch (8 bytes per file, so the shuffle is
   complete, not a bounded buffer of images);
2. parallel decode + resize (``num_parallel_calls=AUTOTUNE``) through the one preprocessing
   definition, :func:`edgeclf.data.folders.decode_resized` (OpenCV decode, RGB/grey, the
   INTER_AREA/INTER_LINEAR resize rule), called via ``tf.numpy_function``; OpenCV releases the GIL,
   so the threads decode in parallel, released in input order (``deterministic=True``: the same
   seed gives the same batches). The pixels are exactly those of the in-memory path;
3. files that fail to decode are dropped (``filter``) and counted; :meth:`FileSplit.check` raises
   DataError as soon as their number exceeds ``max_bad_fraction`` of the listed files (the fit loop
   checks after every batch). So corrupt files cost nothing extra: they are found by the decode
   training does anyway, with no decode pass before training; a folder over the threshold stops
   within the first epoch, as soon as the threshold is crossed;
4. optional ``cache`` (``--cache DIR``): ``tf.data.Dataset.cache`` of the decoded, resized uint8
   images, in a fixed random file order (seeded), written during the first epoch and read
   afterwards (also by later runs on the same files, size and channels); then a bounded shuffle
   buffer of :data:`SHUFFLE_BUFFER_BYTES` of images;
5. the labels (or distillation targets) looked up by index, then
   :func:`edgeclf.data.pipeline.batch_images` (batch, float32, augmentation, prefetch).

Imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeclf._keras import tf
from edgeclf.data.config import AugmentConfig, DataConfig
from edgeclf.data.dataset import stratified_split, stratified_subset
from edgeclf.data.folders import FolderPlan, decode_resized, load_images
from edgeclf.data.pipeline import batch_images
from edgeclf.errors import DataError, ImageError

log = logging.getLogger(__name__)

#: Size of the shuffle buffer of decoded images behind a cache (images = this // bytes per image,
#: at least one batch): 256 MiB, e.g. 1,783 images at 224x224x3.
SHUFFLE_BUFFER_BYTES = 256 * 1024**2


class BadFiles:
    """Which listed files failed to decode (thread-safe; the decode threads add to it)."""

    def __init__(self, n_listed: int, max_bad_fraction: float, what: str):
        self.n_listed, self.max_bad_fraction, self.what = n_listed, max_bad_fraction, what
        self.indices: set[int] = set()
        self._lock = threading.Lock()
        self._reported = 0

    def add(self, index: int, exc: ImageError) -> None:
        with self._lock:
            if index not in self.indices:
                self.indices.add(index)
                log.warning("skipping %s", exc)

    def check(self) -> None:
        """Raise DataError once more than ``max_bad_fraction`` of the listed files failed; log new ones."""
        bad = len(self.indices)
        msg = f"{self.what}: {bad} of {self.n_listed} image files could not be decoded and were skipped"
        frac = bad / max(1, self.n_listed)
        if frac > self.max_bad_fraction:
            raise DataError(f"{msg} ({frac:.1%} > max {self.max_bad_fraction:.0%}); check the files")
        if bad > self._reported:
            self._reported = bad
            log.warning("%s so far", msg)


@dataclass(eq=False)
class FileSplit:
    """One split of an image folder, decoded from disk while it is iterated (an image source, see
    :mod:`edgeclf.data.dataset`).

    Attributes:
        files: the listed image files; labels: int32 (N,) their class indices.
        size: (height, width) the images are resized to; channels: 3 (RGB) or 1 (grey).
        max_bad_fraction: the share of undecodable files that stops training (DataError).
        what: the split's name in messages (e.g. ``DIR/train (val split)``).
        cache: file prefix of the tf.data cache (None = no cache); seed: the cache's file order.
        decoded: number of files decoded so far (all iterations; for tests and benchmarks).
    """

    files: list[Path]
    labels: np.ndarray
    size: tuple[int, int]
    channels: int
    max_bad_fraction: float
    what: str
    cache: Path | None = None
    seed: int = 0
    decoded: int = 0
    bad: BadFiles = field(init=False)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int32)
        self.bad = BadFiles(len(self.files), self.max_bad_fraction, self.what)
        self._names = [str(p) for p in self.files]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def image_bytes(self) -> int:
        return self.size[0] * self.size[1] * self.channels

    def _decode(self, index) -> tuple[np.ndarray, bool]:
        i = int(index)
        self.decoded += 1
        try:
            img, _ = decode_resized(Path(self._names[i]), self.size, self.channels)
            return np.ascontiguousarray(img, dtype=np.uint8), True
        except ImageError as exc:
            self.bad.add(i, exc)
            return np.zeros((*self.size, self.channels), np.uint8), False

    def _images(self, training: bool, seed: int) -> tf.data.Dataset:
        """tf.data of (uint8 (H, W, C) image, int64 index into ``files``), undecodable files dropped."""
        n = len(self.files)
        if self.cache is not None:
            order = np.random.default_rng(self.seed).permutation(n)  # fixed: the cache is written once
        else:
            order = np.arange(n)
        ds = tf.data.Dataset.from_tensor_slices(order.astype(np.int64))
        if training and self.cache is None:
            ds = ds.shuffle(max(1, n), seed=seed, reshuffle_each_iteration=True)
        h, w = self.size

        def decode(i):
            img, ok = tf.numpy_function(self._decode, [i], (tf.uint8, tf.bool), stateful=True)
            img.set_shape((h, w, self.channels))
            ok.set_shape(())
            return img, i, ok

        def decoded(img, i, ok):
            return ok

        def drop_flag(img, i, ok):
            return img, i

        # deterministic: the same --seed gives the same batches (reproducible runs); parallel decode
        # still overlaps, results are only released in order
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.filter(decoded).map(drop_flag)
        if self.cache is not None:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            for stale in self.cache.parent.glob(f"{self.cache.name}*.lockfile"):  # left by a killed run
                log.warning("removing the stale cache lock %s", stale)
                stale.unlink(missing_ok=True)
            ds = ds.cache(str(self.cache))
            if training:
                buffer = min(max(1, n), max(256, SHUFFLE_BUFFER_BYTES // self.image_bytes))
                ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        return ds

    def batches(self, batch_size: int, training: bool, augment: AugmentConfig | None = None, seed: int = 0,
                targets: np.ndarray | None = None) -> tf.data.Dataset:
        """tf.data of (float32 (B, H, W, C) in [0, 255], ``targets`` rows (default: int32 labels)).

        ``targets`` (N, ...) has one row per listed file (e.g. distillation targets). ``training``:
        shuffled every epoch and augmented with ``augment``.
        """
        table = tf.constant(self.labels if targets is None else targets)
        ds = self._images(training, seed).map(lambda img, i: (img, tf.gather(table, i)))
        return batch_images(ds, self.size[0], self.size[1], batch_size, training, augment, seed)

    def indexed_batches(self, batch_size: int) -> tf.data.Dataset:
        """Un-shuffled tf.data of (float32 (B, H, W, C), int64 (B,) indices into ``files``/``labels``)."""
        return batch_images(self._images(False, 0), self.size[0], self.size[1], batch_size, False)

    def sample(self, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode a stratified subset of at most ``n`` files (None = all) into memory.

        Returns:
            (uint8 (M, H, W, C), int32 (M,)), undecodable files dropped.

        Raises:
            DataError: more than ``max_bad_fraction`` of the subset failed to decode.
        """
        i = np.arange(len(self.files)) if n is None else stratified_subset(self.labels, n, seed)
        return load_images([self.files[k] for k in i], self.labels[i], self.size, self.channels,
                           self.max_bad_fraction, self.what, progress=False)

    def check(self) -> None:
        """Raise DataError when more than ``max_bad_fraction`` of the files failed to decode so far."""
        self.bad.check()


def _cache_prefix(cache_dir: str | None, split: str, files: list[Path], size, channels: int) -> Path | None:
    """``DIR/<split>-<H>x<W>x<C>-<hash of the file list>``: a cache is reused only for the same files."""
    if not cache_dir:
        return None
    h = hashlib.sha256("\n".join(map(str, files)).encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"{split}-{size[0]}x{size[1]}x{channels}-{h}"


@dataclass(eq=False)
class FileDataset:
    """An image folder as three streamed splits; the streaming counterpart of
    :class:`edgeclf.data.dataset.Dataset` (same ``class_names``, ``name``, ``test_split_name``,
    ``input_shape``, ``num_classes``, ``summary()``, ``train``/``val``/``test`` image sources)."""

    train: FileSplit
    val: FileSplit
    test: FileSplit
    class_names: list[str]
    name: str
    test_split_name: str = "test"

    @classmethod
    def from_plan(cls, plan: FolderPlan, cfg: DataConfig, channels: int, cache_dir: str | None = None) -> FileDataset:
        """Split ``plan``'s training files into train/val (stratified, as the in-memory path) and wrap
        all three splits; ``cache_dir`` overrides ``cfg.cache`` (e.g. one per distributed worker)."""
        keep, val = stratified_split(plan.labels, cfg.val_split, cfg.seed)
        cache = cache_dir if cache_dir is not None else cfg.cache
        where = str(plan.train_root)

        def split(name, files, labels, what):
            return FileSplit(files, labels, plan.size, channels, cfg.max_bad_fraction, what,
                             _cache_prefix(cache, name, files, plan.size, channels), cfg.seed)

        train_files = [plan.files[i] for i in keep]
        val_files = [plan.files[i] for i in val]
        return cls(split("train", train_files, plan.labels[keep], where),
                   split("val", val_files, plan.labels[val], f"{where} (validation split)"),
                   split("test", plan.test_files, plan.test_labels, plan.test_what),
                   plan.classes, plan.root.name, plan.test_name)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.train.size, self.train.channels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> str:
        h, w, c = self.input_shape
        return (f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} "
                f"{self.test_split_name} image files, {h}x{w}x{c}, {self.num_classes} classes, streamed from disk"
                + (f" (cache {self.train.cache.parent})" if self.train.cache else ""))

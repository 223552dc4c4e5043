"""Dataset discovery and loading, splits, the tf.data pipelines and the representative dataset.

Entry points: :func:`open_dataset` (``DataConfig`` -> an in-memory :class:`Dataset` or, for large
image folders, a streamed :class:`edgeclf.data.stream.FileDataset`; what training and export use),
:func:`open_test_split` (the test split alone; what ``edgeclf eval`` uses) and :func:`load_dataset`
(always in memory). The tf.data helpers live in
:mod:`edgeclf.data.pipeline` and :mod:`edgeclf.data.stream` (both import TensorFlow).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeclf.data.builtin import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, load_cifar10, load_fashion_mnist
from edgeclf.data.config import AugmentConfig, DataConfig
from edgeclf.data.dataset import (
    ArraySplit,
    Dataset,
    balanced_class_weights,
    stratified_split,
    stratified_subset,
)
from edgeclf.data.folders import (
    DataError,
    FolderPlan,
    detect_layout,
    list_class_files,
    load_images,
    plan_folders,
    probe_size,
)

__all__ = ["AugmentConfig", "DataConfig", "DataError", "Dataset", "balanced_class_weights", "estimate_decoded_bytes",
           "load_dataset", "native_size", "open_dataset", "open_test_split", "use_streaming"]

log = logging.getLogger(__name__)
BUILTIN = ("cifar10", "fashion_mnist")
#: (height, width) of the built-in datasets' images.
BUILTIN_SIZES = {"cifar10": (32, 32), "fashion_mnist": (28, 28)}
#: Image folders whose decoded images (train + val + test, uint8 at the training size) would take
#: more than this many bytes are streamed from disk: 2 GiB, or a quarter of the physical memory if
#: that is less. The in-memory path holds the images about twice at its peak (the NumPy arrays and
#: tf.data's copy), so 2 GiB decoded is ~4 GiB of RSS.
STREAM_THRESHOLD_BYTES = 2 * 1024**3
#: ``EDGECLF_STREAM=1`` (or ``0``) makes the automatic choice stream (or not) every image folder,
#: e.g. to run the test suite on the streaming path (``make test-stream``); ``--stream`` /
#: ``--no-stream`` (``DataConfig.stream``) still win.
STREAM_ENV = "EDGECLF_STREAM"


def _resize_all(x: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or x.shape[1:3] == tuple(size):
        return x
    from edgeclf.preprocess import to_model_input

    c = x.shape[3]
    return np.stack([to_model_input(im, size[0], size[1], c) for im in x]).astype(np.uint8)


def _from_arrays(cfg: DataConfig, name: str, classes: list[str], arrays) -> Dataset:
    xtr, ytr, xte, yte = arrays
    if cfg.limit:
        i = stratified_subset(ytr, cfg.limit, cfg.seed)
        xtr, ytr = xtr[i], ytr[i]
        j = stratified_subset(yte, max(10, cfg.limit // 5), cfg.seed)
        xte, yte = xte[j], yte[j]
    keep, val = stratified_split(ytr, cfg.val_split, cfg.seed)
    return Dataset(
        x_train=_resize_all(xtr[keep], cfg.image_size), y_train=ytr[keep],
        x_val=_resize_all(xtr[val], cfg.image_size), y_val=ytr[val],
        x_test=_resize_all(xte, cfg.image_size), y_test=yte,
        class_names=list(classes), name=name,
    )


def _from_folders(plan: FolderPlan, cfg: DataConfig, channels: int, progress: bool) -> Dataset:
    xtr, ytr = load_images(plan.files, plan.labels, plan.size, channels, cfg.max_bad_fraction, f"{plan.train_root}",
                           progress)
    xte, yte = load_images(plan.test_files, plan.test_labels, plan.size, channels, cfg.max_bad_fraction,
                           plan.test_what, progress)
    keep, val = stratified_split(ytr, cfg.val_split, cfg.seed)
    return Dataset(x_train=xtr[keep], y_train=ytr[keep], x_val=xtr[val], y_val=ytr[val],
                   x_test=xte, y_test=yte, class_names=plan.classes, name=plan.root.name,
                   test_split_name=plan.test_name)


def native_size(cfg: DataConfig) -> tuple[int, int]:
    """The (height, width) of ``cfg.source``'s images in pixels, without decoding them all.

    Built-in datasets: their fixed size. Image folders: the most common size among up to 64 sampled
    training images (:func:`~edgeclf.data.folders.probe_size`), the size :func:`load_dataset` uses
    when ``image_size`` is None.

    Raises:
        DataError: as :func:`load_dataset` for a missing or empty directory or undecodable samples.
    """
    if cfg.source in BUILTIN_SIZES:
        return BUILTIN_SIZES[cfg.source]
    root = Path(cfg.source).expanduser()
    if not root.exists():
        raise DataError(f"{cfg.source}: not a directory, and not one of {', '.join(BUILTIN)}")
    train_root, _, _ = detect_layout(root)
    _, files, _ = list_class_files(train_root)
    return probe_size(files)


def estimate_decoded_bytes(n_images: int, size: tuple[int, int], channels: int) -> int:
    """Bytes of ``n_images`` decoded uint8 images of ``size`` = (height, width) and ``channels``."""
    return int(n_images) * int(size[0]) * int(size[1]) * int(channels)


def _stream_threshold() -> int:
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on Linux/macOS
        return STREAM_THRESHOLD_BYTES
    return min(STREAM_THRESHOLD_BYTES, ram // 4)


def use_streaming(cfg: DataConfig, decoded_bytes: int) -> tuple[bool, str]:
    """Whether an image folder of ``decoded_bytes`` is streamed: -> (stream, the reason, for the log).

    ``cfg.stream`` True/False decides; None: ``cfg.cache`` set -> stream (the cache is the
    streaming path's); else :data:`STREAM_ENV` if set; else stream when ``decoded_bytes`` exceeds
    ``min(STREAM_THRESHOLD_BYTES, physical memory / 4)``.

    Raises:
        ConfigError: :data:`STREAM_ENV` is set to something else than 0 or 1.
    """
    from edgeclf.errors import ConfigError

    def human(b: float) -> str:
        return f"{b / 1024**3:.2f} GiB" if b >= 1024**3 else f"{b / 1024**2:.1f} MiB"

    if cfg.stream is not None:
        return cfg.stream, f"{'--stream' if cfg.stream else '--no-stream'}; {human(decoded_bytes)} decoded"
    if cfg.cache:
        return True, f"--cache {cfg.cache}"
    env = os.environ.get(STREAM_ENV, "").strip()
    if env:
        if env not in ("0", "1"):
            raise ConfigError(f"{STREAM_ENV}={env!r}: expected 0 or 1")
        return env == "1", f"{STREAM_ENV}={env}"
    limit = _stream_threshold()
    over = decoded_bytes > limit
    return over, f"{human(decoded_bytes)} decoded {'>' if over else '<='} the {human(limit)} threshold"


def open_dataset(cfg: DataConfig, channels: int = 3, progress: bool = True, cache_dir: str | None = None):
    """The dataset ``cfg`` names, in memory or streamed from disk (image folders; :func:`use_streaming`).

    Args:
        cfg, channels, progress: as for :func:`load_dataset`.
        cache_dir: overrides ``cfg.cache`` for the streaming path (e.g. one directory per worker).

    Returns:
        A :class:`Dataset` (built-in datasets, small folders) or a
        :class:`edgeclf.data.stream.FileDataset`; both have ``train``/``val``/``test`` image sources
        (:mod:`edgeclf.data.dataset`), ``class_names``, ``name``, ``input_shape``, ``summary()``.

    Raises:
        DataError: as :func:`load_dataset`. ConfigError: ``stream`` True for a built-in dataset.
    """
    from edgeclf.errors import ConfigError

    if cfg.source in BUILTIN:
        if cfg.stream or cfg.cache:
            raise ConfigError(f"--stream/--cache apply to image folders; {cfg.source} is loaded into memory")
        return load_dataset(cfg, channels, progress)
    if not Path(cfg.source).expanduser().exists():
        raise DataError(f"{cfg.source}: not a directory, and not one of {', '.join(BUILTIN)}")
    plan = plan_folders(cfg)
    size = estimate_decoded_bytes(len(plan.files) + len(plan.test_files), plan.size, channels)
    stream, why = use_streaming(cfg, size)
    log.info("input pipeline: %s (%s)", "streaming from disk" if stream else "in memory", why)
    if not stream:
        return _from_folders(plan, cfg, channels, progress)
    from edgeclf.data.stream import FileDataset

    return FileDataset.from_plan(plan, cfg, channels, cache_dir)


def open_test_split(cfg: DataConfig, channels: int = 3, progress: bool = True, samples: int | None = None,
                    sample_seed: int = 0):
    """The test split of :func:`open_dataset` alone, without decoding the training images.

    The same images, labels and order as ``open_dataset(cfg, channels).test`` (the same folder plan:
    ``test/`` or ``val/`` folder or held-out files, ``limit``, ``image_size``). Built-in datasets come
    from their Keras arrays (nothing to decode). An image folder's test files are decoded into memory,
    or streamed from disk (without a tf.data cache) when they alone would pass the streaming threshold
    (:func:`use_streaming`). Why: evaluating a model needs only the test split; decoding the training
    split as well made ``edgeclf eval`` of a 160 px mobilenet_v2 on CIFAR-10's JPEG folders take 83 s
    instead of 71 s (Zen 4, session 28), and grows with large photo folders.

    Args:
        cfg, channels, progress: as for :func:`load_dataset`.
        samples: keep a stratified subset of at most this many test images (None = all), chosen with
            ``sample_seed`` before any image is decoded (``edgeclf bench --test-samples``).

    Returns:
        (image source, class names): an :class:`~edgeclf.data.dataset.ArraySplit` of uint8
        (N, H, W, C) images and int32 (N,) labels, or a streamed
        :class:`edgeclf.data.stream.FileSplit`; class names in index order.

    Raises:
        DataError: as :func:`load_dataset` (missing or empty directories, class folders that differ,
            too many undecodable test files).
    """
    if cfg.source in BUILTIN:
        ds = load_dataset(cfg, channels, progress)
        x, y = ds.test.sample(samples, sample_seed)
        return ArraySplit(x, y), ds.class_names
    if not Path(cfg.source).expanduser().exists():
        raise DataError(f"{cfg.source}: not a directory, and not one of {', '.join(BUILTIN)}")
    plan = plan_folders(cfg)
    if samples is not None:
        keep = stratified_subset(plan.test_labels, samples, sample_seed)
        plan = replace(plan, test_files=[plan.test_files[i] for i in keep], test_labels=plan.test_labels[keep])
    stream, why = use_streaming(cfg, estimate_decoded_bytes(len(plan.test_files), plan.size, channels))
    log.info("test split: %s (%s)", "streaming from disk" if stream else "in memory", why)
    if stream:
        from edgeclf.data.stream import FileSplit

        return FileSplit(plan.test_files, plan.test_labels, plan.size, channels, cfg.max_bad_fraction,
                         plan.test_what, None, cfg.seed), plan.classes
    x, y = load_images(plan.test_files, plan.test_labels, plan.size, channels, cfg.max_bad_fraction,
                       plan.test_what, progress)
    return ArraySplit(x, y), plan.classes


def load_dataset(cfg: DataConfig, channels: int = 3, progress: bool = True) -> Dataset:
    """Load the images ``cfg`` names into memory, split into train/val/test.

    Args:
        cfg: the data configuration. ``source`` is ``cifar10``, ``fashion_mnist`` or a directory.
        channels: 3 (RGB) or 1 (grey) for image folders; built-in datasets keep their own
            (CIFAR-10 is RGB, Fashion-MNIST grey).
        progress: show a progress bar while decoding image folders.

    Returns:
        A :class:`Dataset` of uint8 images (N, H, W, C) and int32 labels.

    Raises:
        DataError: missing/empty directories, class folders without images, too many corrupt files,
            or a built-in dataset that can't be downloaded (the message says what to do instead).
    """
    if cfg.source == "cifar10":
        return _from_arrays(cfg, "cifar10", CIFAR10_CLASSES, load_cifar10())
    if cfg.source == "fashion_mnist":
        return _from_arrays(cfg, "fashion_mnist", FASHION_MNIST_CLASSES, load_fashion_mnist())
    if not Path(cfg.source).expanduser().exists():
        raise DataError(f"{cfg.source}: not a directory, and not one of {', '.join(BUILTIN)}")
    return _from_folders(plan_folders(cfg), cfg, channels, progress)

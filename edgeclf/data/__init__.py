"""Dataset discovery and loading, splits, the tf.data pipeline and the representative dataset.

Entry point: :func:`load_dataset` (``DataConfig`` -> in-memory :class:`Dataset`).
The tf.data helpers live in :mod:`edgeclf.data.pipeline` (imports TensorFlow).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgeclf.data.builtin import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, load_cifar10, load_fashion_mnist
from edgeclf.data.config import AugmentConfig, DataConfig
from edgeclf.data.dataset import Dataset, balanced_class_weights, stratified_split, stratified_subset
from edgeclf.data.folders import DataError, detect_layout, list_class_files, load_images, probe_size

__all__ = ["AugmentConfig", "DataConfig", "DataError", "Dataset", "balanced_class_weights", "load_dataset",
           "native_size"]

log = logging.getLogger(__name__)
BUILTIN = ("cifar10", "fashion_mnist")
#: (height, width) of the built-in datasets' images.
BUILTIN_SIZES = {"cifar10": (32, 32), "fashion_mnist": (28, 28)}


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


def _from_folders(cfg: DataConfig, channels: int, progress: bool) -> Dataset:
    root = Path(cfg.source).expanduser()
    train_root, test_root, test_name = detect_layout(root)
    classes, files, labels = list_class_files(train_root)
    if test_root is not None:
        test_classes, test_files, test_labels = list_class_files(test_root)
        if test_classes != classes:
            raise DataError(f"{test_root}: class folders {test_classes} differ from {train_root}'s {classes}")
    else:  # one tree: hold out a stratified test split as well
        rest, held = stratified_split(labels, max(cfg.val_split, 0.1), cfg.seed + 1)
        test_files, test_labels = [files[i] for i in held], labels[held]
        files, labels = [files[i] for i in rest], labels[rest]
    if cfg.limit:
        i = stratified_subset(labels, cfg.limit, cfg.seed)
        files, labels = [files[k] for k in i], labels[i]
        j = stratified_subset(test_labels, max(10, cfg.limit // 5), cfg.seed)
        test_files, test_labels = [test_files[k] for k in j], test_labels[j]
    size = tuple(cfg.image_size) if cfg.image_size else probe_size(files)
    xtr, ytr = load_images(files, labels, size, channels, cfg.max_bad_fraction, f"{train_root}", progress)
    xte, yte = load_images(test_files, test_labels, size, channels, cfg.max_bad_fraction,
                           f"{test_root or root} ({test_name})", progress)
    keep, val = stratified_split(ytr, cfg.val_split, cfg.seed)
    return Dataset(x_train=xtr[keep], y_train=ytr[keep], x_val=xtr[val], y_val=ytr[val],
                   x_test=xte, y_test=yte, class_names=classes, name=root.name, test_split_name=test_name)


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
    return _from_folders(cfg, channels, progress)

"""The test images a benchmark runs on: the model's own test split, loaded without the train split.

No TensorFlow unless the source is a built-in dataset loaded through Keras (``cifar10``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeclf.data.config import DataConfig
from edgeclf.data.dataset import stratified_subset
from edgeclf.errors import ConfigError
from edgeclf.train.config import load_config, saved_data_config


def data_config(model_dir: Path, source: str | None, size: tuple[int, int]) -> DataConfig:
    """The DataConfig from ``MODEL_DIR/config.json`` (or a default one), with ``source`` overriding
    its source, the given (height, width) and no ``limit``.

    Raises:
        ConfigError: config.json exists but is malformed, or neither it nor ``source`` names data.
    """
    if (Path(model_dir) / "config.json").is_file():  # ConfigError naming the file when malformed
        cfg = saved_data_config(model_dir, load_config(model_dir), source)
    elif source is None:
        raise ConfigError(f"{model_dir}: no config.json to find the test data; pass --data")
    else:
        cfg = DataConfig()
    return replace(cfg, source=source or cfg.source, image_size=tuple(size), limit=None)


def load_test_split(cfg: DataConfig, channels: int, samples: int | None, seed: int,
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load the test split ``cfg`` names (only the test split when the data is a folder with one).

    Args:
        cfg: from :func:`data_config`.
        channels: 3 (RGB) or 1 (grey).
        samples: a stratified subset of at most this many images (None = all).
        seed: seed of the subset.

    Returns:
        (images uint8 (N, H, W, C), labels int64 (N,), class names in index order).

    Raises:
        edgeclf.data.DataError: the data can't be found or decoded.
    """
    from edgeclf.data import load_dataset
    from edgeclf.data.folders import detect_layout, list_class_files, load_images

    root = Path(cfg.source).expanduser()
    if cfg.source not in ("cifar10", "fashion_mnist") and root.is_dir():
        _, test_root, test_name = detect_layout(root)
        if test_root is not None:
            classes, files, labels = list_class_files(test_root)
            if samples is not None:
                keep = stratified_subset(labels, samples, seed)
                files, labels = [files[i] for i in keep], labels[keep]
            x, y = load_images(files, labels, tuple(cfg.image_size), channels, cfg.max_bad_fraction,
                               f"{test_root} ({test_name})", progress)
            return x, y.astype(np.int64), classes
    ds = load_dataset(cfg, channels=channels, progress=progress)
    x, y = ds.x_test, ds.y_test
    if samples is not None:
        keep = stratified_subset(y, samples, seed)
        x, y = x[keep], y[keep]
    return x, np.asarray(y, dtype=np.int64), list(ds.class_names)

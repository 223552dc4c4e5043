"""The test images a benchmark runs on: the model's own test split, loaded without the train split.

No TensorFlow unless the source is a built-in dataset loaded through Keras (``cifar10``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeclf.data.config import DataConfig
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
    """Load the test split ``cfg`` names into memory, without decoding its training images
    (:func:`edgeclf.data.open_test_split`).

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
    from edgeclf.data import open_test_split

    split, classes = open_test_split(replace(cfg, stream=False), channels, progress, samples, seed)  # in memory
    return split.x, np.asarray(split.labels, dtype=np.int64), classes

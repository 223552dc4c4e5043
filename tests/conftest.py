"""Shared fixtures: a tiny synthetic image-folder dataset and a tiny trained model directory.

The tiny model (``cnn`` at width 4, 32x32x3, 3 classes) is trained once per session on
synthetic images whose classes differ in texture (horizontal stripes, vertical stripes, blobs),
so it learns a real, non-constant decision in a few seconds.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CIFAR10_JPG = SHARED / "datasets" / "cifar10-jpg"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_1.0_imagenet_no_top.h5"
TINY_CLASSES = ("blobs", "hstripes", "vstripes")


def synthetic_image(cls: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """uint8 (size, size, 3) RGB image of class ``cls`` with random colours, phase and noise."""
    c1 = rng.integers(0, 256, 3)
    c2 = 255 - c1
    yy, xx = np.mgrid[0:size, 0:size]
    period = rng.integers(4, 9)
    phase = rng.integers(0, period)
    if cls == "hstripes":
        mask = ((yy + phase) // (period // 2)) % 2 == 0
    elif cls == "vstripes":
        mask = ((xx + phase) // (period // 2)) % 2 == 0
    else:
        cy, cx = rng.integers(8, size - 8, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(30, 90)
    img = np.where(mask[..., None], c1, c2).astype(np.float32)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_image_folders(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Path:
    """Write ``root/{train,test}/<class>/*.png`` synthetic images; returns ``root``."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in TINY_CLASSES:
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                cv2.imwrite(str(d / f"{i:04d}.png"), cv2.cvtColor(synthetic_image(cls, rng), cv2.COLOR_RGB2BGR))
    return root


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A synthetic image-folder dataset: 3 classes x (120 train + 30 test) 32x32 PNGs."""
    return write_image_folders(tmp_path_factory.mktemp("tinydata"), n_train=120, n_test=30)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_data_dir, tmp_path_factory) -> Path:
    """A complete model directory from a real (short) training run of ``cnn`` width 4 on tiny_data_dir.

    Read-only for tests: copy it (``shutil.copytree``) before writing into it.
    """
    from edgeclf.data import AugmentConfig, DataConfig
    from edgeclf.models import MODELS, ModelConfig
    from edgeclf.train import train
    from edgeclf.train.config import Optimizer, TrainConfig

    out = tmp_path_factory.mktemp("models")
    cfg = TrainConfig(model=ModelConfig(name="cnn", **MODELS["cnn"].tiny),
                      data=DataConfig(source=str(tiny_data_dir), val_split=0.1, seed=0),
                      augment=AugmentConfig(flip=True, translate_px=2), epochs=3, batch_size=32,
                      optimizer=Optimizer.ADAM, lr=3e-3, weight_decay=0.0, label_smoothing=0.0,
                      name="tiny", out=str(out), seed=0)
    result = train(cfg, progress=False)
    return result.model_dir


@pytest.fixture()
def tmpdir_env(tmp_path, monkeypatch) -> Path:
    """A fresh, empty ``$TMPDIR`` for the test (also for Python's tempfile in this process)."""
    d = tmp_path / "TMPDIR"
    d.mkdir()
    monkeypatch.setenv("TMPDIR", str(d))
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d

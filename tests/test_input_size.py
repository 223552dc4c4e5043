"""The training/model input size chosen for image folders of large photos (``resolve_input_size``),
logged in one line, with ``--input-size`` as the override."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_CLASSES, synthetic_image

from edgeclf.cli import cli
from edgeclf.data import DataConfig
from edgeclf.models import ModelConfig
from edgeclf.train.config import TrainConfig
from edgeclf.train.loop import resolve_input_size

LOGGER = "edgeclf.train.loop"


def _photos(root: Path, height: int, width: int, n_train: int = 6, n_test: int = 2) -> Path:
    """``root/{train,test}/<class>/*.jpg`` of height x width synthetic photos."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in TINY_CLASSES:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = cv2.resize(synthetic_image(cls, rng, 64), (width, height), interpolation=cv2.INTER_NEAREST)
                cv2.imwrite(str(root / split / cls / f"{i}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return _photos(tmp_path_factory.mktemp("photos"), 400, 400)


def _cfg(source, model: str = "cnn", image_size=None, **model_kw) -> TrainConfig:
    return TrainConfig(model=ModelConfig(name=model, **model_kw),
                       data=DataConfig(source=str(source), image_size=image_size))


@pytest.mark.parametrize("model, model_kw, expected", [
    ("cnn", {}, (64, 64)),
    ("cnn-small", {}, (32, 32)),
    ("mobilenet_v2", {"img_size": 96, "weights": "none"}, (96, 96)),
    ("mobilenet_v2", {"img_size": 128, "weights": "none"}, (128, 128)),
])
def test_large_photos_get_the_size_the_model_needs(photos, model, model_kw, expected, caplog):
    with caplog.at_level(logging.INFO, LOGGER):
        cfg = resolve_input_size(_cfg(photos, model, **model_kw))
    assert cfg.data.image_size == expected
    h, w = expected
    assert caplog.messages == [f"input size {h}x{w} (images are 400x400; --input-size to override)"]


def test_non_square_photos_keep_their_aspect_ratio(tmp_path, caplog):
    root = _photos(tmp_path / "wide", 300, 480, n_train=2, n_test=1)
    with caplog.at_level(logging.INFO, LOGGER):
        cfg = resolve_input_size(_cfg(root))
    assert cfg.data.image_size == (40, 64)
    assert caplog.messages == ["input size 40x64 (images are 300x480; --input-size to override)"]


def test_small_images_and_explicit_sizes_are_kept(tiny_data_dir, photos, caplog):
    with caplog.at_level(logging.INFO, LOGGER):
        cfg = _cfg(tiny_data_dir)
        assert resolve_input_size(cfg) == cfg  # 32x32 images: nothing to reduce
        assert caplog.messages == ["input size 32x32 (the images' size)"]
        caplog.clear()
        explicit = _cfg(photos, image_size=(120, 100))
        assert resolve_input_size(explicit) == explicit
        builtin = _cfg("cifar10")
        assert resolve_input_size(builtin) == builtin  # 32x32, known without loading
    assert caplog.messages == []


def test_training_on_large_photos_says_what_it_chose(photos, tmp_path, caplog):
    args = ["train", "--data", photos, "--width", 4, "--epochs", 1, "--batch-size", 8, "--optimizer", "adam",
            "--lr", 3e-3, "--val-split", 0, "--out", tmp_path]
    with caplog.at_level(logging.INFO, LOGGER):
        r = CliRunner().invoke(cli, [str(a) for a in [*args, "--name", "auto"]])
    assert r.exit_code == 0, r.output
    assert "input size 64x64 (images are 400x400; --input-size to override)" in caplog.messages
    m = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert m["input_shape"] == [64, 64, 3]
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["data"]["image_size"] == [64, 64]

    caplog.clear()
    with caplog.at_level(logging.INFO, LOGGER):
        r = CliRunner().invoke(cli, [str(a) for a in [*args, "--input-size", "48", "--name", "manual"]])
    assert r.exit_code == 0, r.output
    assert not [msg for msg in caplog.messages if msg.startswith("input size")]
    assert json.loads((tmp_path / "manual" / "metrics.json").read_text())["input_shape"] == [48, 48, 3]

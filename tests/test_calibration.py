"""Calibration sampling: stratified (the default) gives every class its share; the study's
``random`` sampling draws from the same training images without stratification."""

from __future__ import annotations

import numpy as np
import pytest

from edgeclf.data.dataset import ArraySplit
from edgeclf.errors import ConfigError
from edgeclf.export.config import ExportConfig
from edgeclf.export.pipeline import _calibration_source


def _class_counts(sampling: str, seed: int) -> np.ndarray:
    labels = np.repeat(np.arange(10), 100).astype(np.int32)
    train = ArraySplit(x=np.arange(1000)[:, None, None, None], labels=labels)  # image value = its index
    x, _ = _calibration_source(train, ExportConfig(calibration_sampling=sampling)).sample(30, seed)
    return np.bincount(labels[x[:, 0, 0, 0]], minlength=10)


def test_stratified_calibration_gives_each_class_its_share():
    assert _class_counts("stratified", 0).tolist() == [3] * 10


def test_random_calibration_is_not_stratified():
    counts = [_class_counts("random", seed) for seed in range(5)]
    assert all(c.sum() == 30 for c in counts)
    assert any(c.tolist() != [3] * 10 for c in counts)


def test_unknown_calibration_sampling_is_refused():
    with pytest.raises(ConfigError, match="--calibration-sampling"):
        ExportConfig(calibration_sampling="balanced")

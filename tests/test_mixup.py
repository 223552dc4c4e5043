"""Mixup (``edgeclf train --mixup``): the Beta draws against scipy's Beta distribution, each batch blended
with its reverse by one lam for images and targets alike, reproducible per seed, the targets ``fit``
really trains on, and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _cli import run_cli as _run_cli
from scipy import stats

from edgeclf._keras import keras, tf
from edgeclf.data import AugmentConfig, DataConfig
from edgeclf.data.dataset import ArraySplit
from edgeclf.errors import ConfigError
from edgeclf.models import ModelConfig
from edgeclf.train import load_config, train
from edgeclf.train.config import DistillConfig, Optimizer, TrainConfig
from edgeclf.train.fit import FitPlan, fit
from edgeclf.train.mixup import beta_sample, mixup


@pytest.mark.parametrize("alpha", [0.1, 1.0, 4.0])
def test_beta_sample_follows_the_beta_distribution(alpha):
    n = 1500
    draws = np.array([float(beta_sample(alpha, tf.constant([7, i], tf.int64))) for i in range(n)])
    assert np.all((draws >= 0) & (draws <= 1))
    # The empirical CDF against Beta(alpha, alpha)'s on a grid inside (0, 1): float32 rounds the ~10 % of
    # Beta(0.1, 0.1) draws within 6e-8 of 1 to 1.0, which a plain KS test would flag at x = 1. By the DKW
    # inequality the largest gap exceeds 0.05 with probability <= 2 exp(-2 n 0.05^2) = 1.1e-3.
    grid = np.linspace(1e-4, 1 - 1e-4, 401)
    ecdf = np.searchsorted(np.sort(draws), grid, side="right") / n

    def gap(a: float) -> float:
        return float(np.max(np.abs(ecdf - stats.beta(a, a).cdf(grid))))

    assert gap(alpha) < 0.05
    for other in {0.1, 1.0, 4.0} - {alpha}:  # and the test can tell the alphas apart
        assert gap(other) > 0.1


def _batches(n: int = 24, batch: int = 6):
    """Images with distinct random pixels; target row i = one-hot of i within its batch, so every mixed
    row names both of its sources."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, 5, 5, 3)).astype(np.float32)
    y = np.tile(np.eye(batch, dtype=np.float32), (n // batch, 1))
    return x, y, tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _epoch(ds) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(a.numpy(), b.numpy()) for a, b in ds]


def test_each_batch_is_blended_with_its_reverse_by_one_lam():
    x, y, ds = _batches()
    lams = []
    for k, (xm, ym) in enumerate(_epoch(mixup(ds, alpha=1.0, seed=3))):
        xb, yb = x[k * 6:(k + 1) * 6], y[k * 6:(k + 1) * 6]
        lam = ym[0, 0]  # row 0 = lam * e0 + (1 - lam) * e5
        np.testing.assert_allclose(ym, lam * yb + (1 - lam) * yb[::-1], atol=1e-6)
        np.testing.assert_allclose(xm, lam * xb + (1 - lam) * xb[::-1], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(ym.sum(axis=1), 1.0, atol=1e-6)
        lams.append(lam)
    assert len(set(np.round(lams, 6))) == len(lams)  # a new lam per batch


def test_lams_are_reproducible_per_seed_and_new_each_epoch():
    _, _, ds = _batches()

    def lams(seed: int, epochs: int = 2):
        mixed = mixup(ds, alpha=1.0, seed=seed)
        return [[ym[0, 0] for _, ym in _epoch(mixed)] for _ in range(epochs)]

    first = lams(5)
    assert first == lams(5)
    assert first[0] != first[1]  # the second epoch draws again
    assert first != lams(6)


def test_mixup_refuses_a_non_positive_alpha():
    _, _, ds = _batches()
    with pytest.raises(ValueError, match="alpha"):
        mixup(ds, alpha=0.0)


class _TargetRecorder(keras.Model):
    """A linear classifier that records the largest entry of the least certain target row it was fit on."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.flat, self.dense = keras.layers.Flatten(), keras.layers.Dense(num_classes, activation="softmax")
        self.least_certain = tf.Variable(1.0, trainable=False)

    def call(self, x):
        return self.dense(self.flat(x / 255.0))

    def train_step(self, data):
        _, y = data
        self.least_certain.assign(tf.minimum(self.least_certain, tf.reduce_min(tf.reduce_max(y, axis=-1))))
        return super().train_step(data)


@pytest.mark.parametrize("alpha", [0.0, 50.0])
def test_fit_trains_on_mixed_targets_only_with_mixup(alpha):
    rng = np.random.default_rng(1)
    train_split = ArraySplit(x=rng.integers(0, 256, (64, 4, 4, 3), dtype=np.uint8),
                             labels=np.arange(64, dtype=np.int32) % 4)
    model = _TargetRecorder(4)
    plan = FitPlan(optimizer=Optimizer.ADAM, lr=1e-3, batch_size=16, seed=0, mixup_alpha=alpha)
    fit(model, train_split, 4, plan, epochs=1)
    least = float(model.least_certain.numpy())
    if alpha:  # Beta(50, 50) keeps lam near 0.5: rows mixing two different labels have max entry ~0.5
        assert 0.3 < least < 0.7
    else:
        assert least == 1.0


def test_mixup_with_a_teacher_or_a_negative_alpha_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="distillation"):
        TrainConfig(mixup_alpha=0.1, distill=DistillConfig(teacher=(str(tmp_path),)))
    with pytest.raises(ConfigError, match="mixup_alpha"):
        TrainConfig(mixup_alpha=-0.1)
    with pytest.raises(ValueError, match="mixup_alpha"):
        FitPlan(optimizer=Optimizer.ADAM, lr=1e-3, batch_size=8, mixup_alpha=-1.0)


def test_a_mixup_run_records_alpha_and_trains(tiny_data_dir, tmp_path):
    cfg = TrainConfig(model=ModelConfig(name="cnn", width=4, dropout=0.0),
                      data=DataConfig(source=str(tiny_data_dir), val_split=0.1, seed=0),
                      augment=AugmentConfig(flip=True, translate_px=2), epochs=1, batch_size=32,
                      optimizer=Optimizer.ADAM, lr=3e-3, weight_decay=0.0, label_smoothing=0.0,
                      mixup_alpha=0.2, name="mixed", out=str(tmp_path), seed=0)
    result = train(cfg, progress=False)
    assert load_config(result.model_dir).mixup_alpha == 0.2
    assert json.loads((result.model_dir / "config.json").read_text())["mixup_alpha"] == 0.2
    assert 0 <= json.loads((result.model_dir / "metrics.json").read_text())["top1_acc"] <= 1


def test_cli_refuses_mixup_with_a_teacher(tiny_data_dir, tmp_path):
    r = _run_cli(["train", "--data", tiny_data_dir, "--mixup", "0.1", "--teacher", tmp_path, "--out", tmp_path / "o"])
    assert r.exit_code == 2, r.output
    assert "mixup does not combine with distillation" in r.output
    assert not (tmp_path / "o").exists()

"""``--bn-batch-stats``: BatchNorm recalibration keeps the model's output and makes batch-statistics
training start from it; the base follows its BatchNorm flags only with the option."""

from __future__ import annotations

import numpy as np
import pytest

from edgeclf._keras import keras
from edgeclf.errors import ConfigError
from edgeclf.export.flatten import flatten_model
from edgeclf.models import ModelConfig, build_model
from edgeclf.models import mobilenet_v2 as mnv2
from edgeclf.models.bn_calibration import batchnorm_layers, input_moments, recalibrate_batchnorm
from edgeclf.models.transfer import base_feed
from edgeclf.train.config import TrainConfig

L = keras.layers


def _model(bn_batch_stats: bool, seed: int = 0) -> keras.Model:
    """A 32 px mobilenet_v2 without weights whose BatchNorms have random scale, offset and statistics,
    as pretrained weights would (a fresh base has the identity: nothing to recalibrate)."""
    keras.utils.set_random_seed(seed)
    model = build_model(ModelConfig(name="mobilenet_v2", weights="none", img_size=32, alpha=0.35, dropout=0.0,
                                    bn_batch_stats=bn_batch_stats), (32, 32, 3), 10)
    rng = np.random.default_rng(seed)
    for bn in batchnorm_layers(model):
        c = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
        bn.beta.assign(rng.normal(0, 0.3, c).astype(np.float32))
        bn.moving_mean.assign(rng.normal(0, 0.5, c).astype(np.float32))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype(np.float32))
    return model


def _images(n: int = 48, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, 32, 32, 3)).astype(np.float32)


def _batches(x: np.ndarray, size: int = 16):
    return [x[i:i + size] for i in range(0, len(x), size)]


def test_recalibration_keeps_the_output_and_sets_the_input_statistics():
    model, x = _model(True), _images()
    before = model(x, training=False).numpy()
    n = recalibrate_batchnorm(model, _batches(x), max_images=len(x))
    assert n == len(batchnorm_layers(model)) == 52
    np.testing.assert_allclose(model(x, training=False).numpy(), before, atol=2e-5)
    # the moving statistics are those of each BatchNorm's input on these images (one layer checked
    # directly: the output of the stem convolution)
    base = mnv2.base_model(model)
    stem = keras.Model(base.inputs, base.get_layer("bn_Conv1").input)(base_feed(model)(x)).numpy()
    bn = base.get_layer("bn_Conv1")
    np.testing.assert_allclose(bn.moving_mean.numpy(), stem.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), stem.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-4)


def test_after_recalibration_batch_statistics_reproduce_the_inference_output():
    x = _images()
    stale, fresh = _model(True), _model(True)
    recalibrate_batchnorm(fresh, _batches(x), max_images=len(x))
    gaps = []
    for model in (stale, fresh):
        mnv2.set_base_trainable(model, -1, train_bn=True)  # BatchNorm in training mode
        gaps.append(np.abs(model(x, training=True).numpy() - model(x, training=False).numpy()).max())
    # without recalibration batch statistics change the predictions; with it they match (same images)
    assert gaps[0] > 0.05
    assert gaps[1] < 2e-3


def test_max_images_limits_the_pass():
    model, x = _model(True), _images(48)
    first = input_moments(model, _batches(x), max_images=20)
    again = input_moments(model, _batches(x[:20], size=7), max_images=1000)
    for name, (mean, var) in first.items():
        np.testing.assert_allclose(mean, again[name][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var, again[name][1], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="no images"):
        input_moments(model, [], max_images=10)


@pytest.mark.parametrize("bn_batch_stats", [False, True])
def test_only_bn_batch_stats_lets_a_trainable_batchnorm_use_batch_statistics(bn_batch_stats):
    model, x = _model(bn_batch_stats), _images(8)
    mnv2.set_base_trainable(model, -1, train_bn=True)
    bn = mnv2.base_model(model).get_layer("Conv_1_bn")
    before = bn.moving_mean.numpy().copy()
    model(x, training=True)  # a training-mode call updates the moving statistics of a BatchNorm in training mode
    assert (not np.allclose(bn.moving_mean.numpy(), before)) == bn_batch_stats
    # frozen again (the end of training), the model predicts with moving statistics in either case
    mnv2.set_base_trainable(model, -1)
    np.testing.assert_allclose(model(x, training=True).numpy(), model(x, training=False).numpy(), atol=1e-6)
    # and export can inline its base: same predictions
    np.testing.assert_allclose(flatten_model(model)(x).numpy(), model(x).numpy(), atol=1e-5)


def test_bn_batch_stats_needs_train_bn():
    mcfg = ModelConfig(name="mobilenet_v2", weights="none", bn_batch_stats=True)
    with pytest.raises(ConfigError, match="--bn-batch-stats needs --train-bn"):
        TrainConfig(model=mcfg, train_bn=False)
    assert TrainConfig(model=mcfg, train_bn=True).model.bn_batch_stats
    # configs written before the field existed load as built then: inference-mode BatchNorm
    assert ModelConfig.from_dict({"name": "mobilenet_v2", "weights": "none"}).bn_batch_stats is False

"""Progressive resizing: the first epochs of the last phase at a lower input size, the time budget
planning with each epoch's size, the model back at its own size afterwards."""

from __future__ import annotations

import numpy as np
import pytest

from edgeclf._keras import keras
from edgeclf.data.dataset import ArraySplit
from edgeclf.errors import ConfigError
from edgeclf.models import ModelConfig, build_model
from edgeclf.models.transfer import base_model
from edgeclf.train.budget import TimeBudget
from edgeclf.train.config import Optimizer, TrainConfig
from edgeclf.train.fit import FitPlan, fit
from edgeclf.train.progressive import epoch_size, low_res_epochs
from edgeclf.train.schedules import WarmupCosine


def test_the_first_fraction_of_the_epochs_is_small():
    assert [low_res_epochs(n, 0.5) for n in (1, 2, 9, 10)] == [0, 1, 4, 5]
    assert [epoch_size(e, 10, 128, 160, 0.5) for e in range(10)] == [128] * 5 + [160] * 5
    assert [epoch_size(e, 4, 128, 160, 0.75) for e in range(4)] == [128] * 3 + [160]


class _Dummy:
    stop_training = False


def _run_budget(budget_s: float, seconds: dict[int, float], sized: bool) -> tuple[list[int], float, list[int]]:
    """Drive a TimeBudget through a 10-epoch phase, half at 32 px and half at 64 px, whose epochs take
    ``seconds[size]``; returns (the sizes run, the time used, the replans)."""
    now = [0.0]
    replans: list[int] = []
    budget = TimeBudget(budget_s, on_replan=replans.append, clock=lambda: now[0])
    budget.bind(WarmupCosine(0.1, 100, 10), 10, 10, 0.0,
                size_of=(lambda e, n: epoch_size(e, n, 32, 64, 0.5)) if sized else None)
    budget.set_model(_Dummy())
    budget.on_train_begin()
    sizes = []
    for epoch in range(10):
        size = epoch_size(epoch, budget.epochs, 32, 64, 0.5)
        budget.on_epoch_begin(epoch)
        now[0] += seconds[size]
        sizes.append(size)
        budget.on_epoch_end(epoch)
        if budget.model.stop_training:
            break
    return sizes, now[0], replans


def test_the_budget_plans_with_each_epochs_size():
    # small epochs take 20 s, large ones 100 s (5x; the pixel count says 4x): 10 planned epochs need
    # 600 s, the budget is 580 s
    sizes, used, replans = _run_budget(580.0, {32: 20.0, 64: 100.0}, sized=True)
    # from the small epochs the budget expects 80 s large ones and keeps 10 epochs; after the first
    # large one (100 s) it plans 9 (the switch moves to epoch 4 of 9, but 5 small ones have run)
    assert sizes == [32] * 5 + [64] * 4 and replans == [9]
    assert used == 500.0 <= 580.0
    # planning from the mean epoch time instead (every epoch alike) runs over the budget: after 9 epochs
    # 80 s are left and the mean epoch is 60 s, so a 100 s one starts
    sizes, used_uniform, _ = _run_budget(580.0, {32: 20.0, 64: 100.0}, sized=False)
    assert len(sizes) == 10 and used_uniform == 600.0 > 580.0


def _tiny_transfer(img_size: int = 48) -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model(ModelConfig(name="mobilenet_v2", weights="none", img_size=img_size, alpha=0.35,
                                   dropout=0.0), (32, 32, 3), 3)


def test_fit_trains_the_first_epochs_small_and_ends_at_the_model_size():
    rng = np.random.default_rng(0)
    split = ArraySplit(rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, 24))
    model = _tiny_transfer()
    layer = model.get_layer("resize")
    traced, original = [], layer.call

    def spy(inputs, *args, **kwargs):  # runs when a step is traced: records the size it is traced at
        out = original(inputs, *args, **kwargs)
        traced.append(int(out.shape[1]))
        return out

    layer.call = spy

    class Sizes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.at_epoch_end: list[int] = []

        def on_epoch_end(self, epoch, logs=None):
            self.at_epoch_end.append(layer.height)

    sizes = Sizes()
    plan = FitPlan(optimizer=Optimizer.ADAM, lr=1e-3, batch_size=8, progressive_size=32, progressive_fraction=0.5)
    hist = fit(model, split, 3, plan, 4, [sizes])
    assert len(hist.history["loss"]) == 4
    assert sizes.at_epoch_end == [32, 32, 48, 48]
    # the train step was traced at 32 px first and traced again at 48 px: the small epochs really ran small
    assert traced[0] == 32 and 48 in traced and set(traced) == {32, 48}
    # afterwards the model is at its own size again, with its base's input check back
    assert (layer.height, layer.width) == (48, 48)
    assert base_model(model).input_spec[0].shape[1:3] == (48, 48)
    traced.clear()
    model.predict(split.x[:4].astype(np.float32), verbose=0)
    assert traced == [48]


def test_progressive_needs_a_resizing_transfer_model():
    rng = np.random.default_rng(0)
    split = ArraySplit(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, 8))
    plan = FitPlan(optimizer=Optimizer.ADAM, lr=1e-3, batch_size=8, progressive_size=24)
    with pytest.raises(ConfigError, match="no resize layer"):
        fit(_tiny_transfer(img_size=32), split, 3, plan, 1)  # 32 px images, img_size 32: nothing resized
    with pytest.raises(ConfigError, match="--progressive-size needs a model with --img-size"):
        TrainConfig(model=ModelConfig(name="cnn"), progressive_size=64)
    with pytest.raises(ConfigError, match="below the model's --img-size 160"):
        TrainConfig(model=ModelConfig(name="mobilenet_v2", weights="none"), progressive_size=160)
    with pytest.raises(ConfigError, match="--progressive-fraction"):
        TrainConfig(model=ModelConfig(name="mobilenet_v2", weights="none"), progressive_size=128,
                    progressive_fraction=1.0)
    assert TrainConfig(model=ModelConfig(name="mobilenet_v2", weights="none"), progressive_size=128).progressive_size

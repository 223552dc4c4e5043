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
from edgeclf.train.progressive import ProgressiveResize, epoch_size, low_res_epochs
from edgeclf.train.schedules import WarmupCosine


def test_the_first_fraction_of_the_epochs_is_small():
    assert [low_res_epochs(n, 0.5) for n in (1, 2, 9, 10)] == [0, 1, 4, 5]
    assert [epoch_size(e, 10, 128, 160, 0.5) for e in range(10)] == [128] * 5 + [160] * 5
    assert [epoch_size(e, 4, 128, 160, 0.75) for e in range(4)] == [128] * 3 + [160]


class _Dummy:
    stop_training = False


def _drive(budget: TimeBudget, now: list[float], low: int, full: int, took) -> list[int]:
    """Run a bound TimeBudget through its phase, half the planned epochs at ``low`` px and the rest at
    ``full``, epoch ``e`` at size ``s`` taking ``took(e, s)`` seconds on the fake clock ``now[0]``, until it
    stops the phase; returns the sizes run."""
    budget.set_model(_Dummy())
    budget.on_train_begin()
    sizes = []
    for epoch in range(budget.max_epochs):
        size = epoch_size(epoch, budget.epochs, low, full, 0.5)
        budget.on_epoch_begin(epoch)
        now[0] += took(epoch, size)
        sizes.append(size)
        budget.on_epoch_end(epoch)
        if budget.model.stop_training:
            break
    return sizes


def _run_budget(budget_s: float, seconds: dict[int, float], sized: bool) -> tuple[list[int], float, list[int]]:
    """Drive a TimeBudget through a 10-epoch phase, half at 32 px and half at 64 px, whose epochs take
    ``seconds[size]``; returns (the sizes run, the time used, the replans)."""
    now = [0.0]
    replans: list[int] = []
    budget = TimeBudget(budget_s, on_replan=replans.append, clock=lambda: now[0])
    budget.bind(WarmupCosine(0.1, 100, 10), 10, 10, 0.0,
                size_of=(lambda e, n: epoch_size(e, n, 32, 64, 0.5)) if sized else None)
    sizes = _drive(budget, now, 32, 64, lambda epoch, size: seconds[size])
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


def test_the_budget_grows_a_plan_cut_on_an_estimate_once_the_size_is_measured():
    # small epochs take 20 s, large ones 60 s (3x), the pixel count says 4x (80 s): 10 planned epochs
    # need 400 s, the budget is 420 s
    sizes, used, replans = _run_budget(420.0, {32: 20.0, 64: 60.0}, sized=True)
    # after two small epochs the estimate (80 s large ones) cuts the plan to 8 (switch at epoch 4); the
    # first large epoch measures 60 s and 9 fit again with half an epoch to spare (270 s of 280 s left),
    # never 10 (300 s); the unmeasured large size alone never grows the plan
    assert replans == [8, 9] and sizes == [32] * 4 + [64] * 5
    assert used == 380.0 <= 420.0


def test_the_first_epoch_at_each_size_counts_only_until_another_is_measured():
    # the step is traced again when the size changes: 13 s, 6 s at 48 px, then 23 s, 15 s at 96 px
    budget = TimeBudget(100.0)
    budget.epoch_sizes, budget.epoch_seconds = [48, 48, 96], [13.0, 6.0, 23.0]
    assert budget.epoch_estimate(48) == 6.0 and budget.epoch_estimate(96) == 23.0  # the only one at 96 px
    budget.epoch_sizes.append(96)
    budget.epoch_seconds.append(15.0)
    assert budget.epoch_estimate() == 15.0 and budget.epoch_estimate(64) == pytest.approx((6.0 * (64 / 48) ** 2 + 15.0 * (64 / 96) ** 2) / 2)


def test_session_26s_epoch_times_replayed_give_the_epoch_that_fit():
    """The measured fine-tune epoch times of session 26's full run (mobilenet_v2, --time-budget 1.9,
    --progressive-size 128, 2-vCPU Zen 4; benchmarks/results/cifar10-mobilenet_v2-progressive-zen4),
    the head epoch and checkpoints (~210 s) before them. That run cut 14 epochs to 10 on the pixel-count
    estimate and ended 772 s early; replayed, the first 160 px epoch grows the plan back to 11, which
    ends within the 6,840 s (an 11th epoch assumed to take 760 s, as the last ones did)."""
    seconds = [447, 473, 427, 444, 441, 649, 679, 695, 743, 751, 760, 760, 760, 760]
    now, replans = [210.0], []
    budget = TimeBudget(1.9 * 3600, seconds_before=210.0, on_replan=replans.append, clock=lambda: now[0])
    budget.bind(WarmupCosine(2e-4, 14 * 782, 14), 782, 14, 0.0, size_of=lambda e, n: epoch_size(e, n, 128, 160, 0.5))
    sizes = _drive(budget, now, 128, 160, lambda epoch, size: seconds[epoch])
    assert replans == [10, 11] and sizes == [128] * 5 + [160] * 6
    assert now[0] == 6719.0 <= 1.9 * 3600


class _TraceCounter:
    """Stands in for a model: counts the retraces ProgressiveResize asks for."""

    def __init__(self):
        self.traces = 0
        self.test_function = self.predict_function = None

    def make_train_function(self, force=False):
        self.traces += 1


def test_a_lengthened_plan_never_goes_back_to_the_low_size():
    layer = keras.layers.Resizing(64, 64)
    plan = [8]
    resize = ProgressiveResize(layer, 32, 0.5, lambda: plan[0])
    model = _TraceCounter()
    resize.set_model(model)
    sizes = []
    for epoch in range(9):
        if epoch == 5:
            plan[0] = 12  # the time budget lengthens the plan: its switch would be at epoch 6
        resize.on_epoch_begin(epoch)
        sizes.append(layer.height)
    assert sizes == [32] * 4 + [64] * 5 and model.traces == 2  # to 32 px, then to 64 px: once each
    assert resize.size_in(3, 12) == 32 and resize.size_in(5, 12) == 64 and resize.size_of(6) == 64


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

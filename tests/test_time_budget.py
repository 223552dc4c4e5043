"""``--time-budget``: the last phase's epochs re-planned from the measured epoch time, the schedule
shortened to still decay to 0, the shorter plan kept by ``--resume``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _cli import run_cli

from edgeclf._keras import keras
from edgeclf.data import AugmentConfig, DataConfig
from edgeclf.data.dataset import ArraySplit
from edgeclf.errors import ConfigError
from edgeclf.models import ModelConfig
from edgeclf.train import resume, train
from edgeclf.train.budget import TimeBudget
from edgeclf.train.config import Optimizer, TrainConfig
from edgeclf.train.fit import FitPlan, fit
from edgeclf.train.schedules import WarmupCosine


class _Clock:
    """A fake clock that moves only when told (``seconds`` per epoch, in on_epoch_begin after the budget
    read it, so each epoch 'takes' exactly that long); records the learning rate each step applied."""

    def __init__(self, seconds: float):
        self.now, self.seconds, self.lrs = 0.0, seconds, []

    def __call__(self) -> float:
        return self.now

    def callback(self) -> keras.callbacks.Callback:
        clock = self

        class Tick(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                clock.now += clock.seconds

            def on_train_batch_end(self, batch, logs=None):  # tf_keras: the rate the last step used
                clock.lrs.append(float(self.model.optimizer.learning_rate))

        return Tick()


def _tiny_model() -> keras.Model:
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))


def test_budget_shortens_the_phase_and_its_schedule():
    rng = np.random.default_rng(0)
    train_split = ArraySplit(rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8), rng.integers(0, 2, 64))
    plan = FitPlan(optimizer=Optimizer.SGD, lr=0.1, batch_size=16, warmup_fraction=0.25)
    clock, replans = _Clock(3.0), []
    # 10 s for 5 planned epochs of 3 s: after epoch 1 a second epoch fits, so the plan waits for its time;
    # after epoch 2, 4 s are left = 1 more epoch -> 3 in all
    budget = TimeBudget(10.0, on_replan=replans.append, clock=clock)
    model = _tiny_model()
    hist = fit(model, train_split, 2, plan, 5, [clock.callback()], budget=budget)
    spe = 4  # 64 images / batch 16
    assert len(hist.history["loss"]) == 3 and replans == [3]
    assert int(model.optimizer.iterations) == 3 * spe
    # epochs 1-2 follow the planned 5-epoch schedule, epoch 3 the 3-epoch one (decaying to 0 at step 12)
    three, five = WarmupCosine(0.1, 3 * spe, 3), WarmupCosine(0.1, 5 * spe, 5)
    np.testing.assert_allclose(clock.lrs[:2 * spe], [float(five(s)) for s in range(2 * spe)], rtol=1e-5)
    np.testing.assert_allclose(clock.lrs[2 * spe:], [float(three(s)) for s in range(2 * spe, 3 * spe)], rtol=1e-5)
    assert clock.lrs[-1] < 0.03 < float(five(3 * spe - 1))
    assert float(budget.schedule(model.optimizer.iterations)) == pytest.approx(0.0, abs=1e-7)  # annealed at the end


def test_a_slow_first_epoch_alone_does_not_shorten_the_plan():
    """Tracing or a neighbour makes epoch 1 slow: planning from it would give 3 of 5 epochs, from the
    second epoch's time 4 fit; and when no second epoch fits at the first one's pace, it stops at once."""
    clock, replans = _Clock(0.0), []
    budget = TimeBudget(40.0, on_replan=replans.append, clock=clock)
    budget.bind(WarmupCosine(0.1, 50, 5), 10, 5, 0.1)
    budget.model = _tiny_model()
    budget.on_train_begin()
    for seconds in (13.0, 8.0):   # 13 s: 27 s left = 2 more at 13 s (3 in all) -> wait; then 8 s: 19 s = 2 more
        budget.on_epoch_begin(0)
        clock.now += seconds
        budget.on_epoch_end(len(budget.epoch_seconds))
    assert replans == [4] and budget.epochs == 4 and not budget.model.stop_training
    replans = []
    tight = TimeBudget(20.0, on_replan=replans.append, clock=clock)
    tight.bind(WarmupCosine(0.1, 50, 5), 10, 5, 0.1)
    tight.model = _tiny_model()
    tight.on_train_begin()
    tight.on_epoch_begin(0)
    clock.now += 13.0   # 7 s left: no second epoch of 13 s fits
    tight.on_epoch_end(0)
    assert replans == [1] and tight.model.stop_training


def test_time_between_epochs_counts_in_the_epoch_time():
    """What runs between two epochs (the other callbacks' saves, Keras making the next data iterator) uses
    the budget too: 8 s epochs with 2 s between them cost 10 s each, so 5 of 6 fit in 50 s (planned from
    begin-to-end times, 8 s, all 6 would stay planned and the run would end at 58 s;
    benchmarks/results/cifar10-cnn-whiten/README.md)."""
    clock, replans = _Clock(0.0), []
    budget = TimeBudget(50.0, on_replan=replans.append, clock=clock)
    budget.bind(WarmupCosine(0.1, 60, 6), 10, 6, 0.1)
    budget.model = _tiny_model()
    budget.on_train_begin()
    epoch = 0
    while not budget.model.stop_training:
        budget.on_epoch_begin(epoch)
        clock.now += 8.0
        budget.on_epoch_end(epoch)
        clock.now += 2.0  # after this epoch's end, before the next one's begin
        epoch += 1
    assert budget.epoch_seconds == [8.0, 10.0, 10.0, 10.0, 10.0]
    assert replans == [5] and epoch == 5 and clock.now - 2.0 <= 50.0


def test_budget_counts_time_already_spent_and_never_adds_epochs():
    clock = _Clock(0.0)
    budget = TimeBudget(100.0, seconds_before=40.0, clock=clock)
    budget.bind(WarmupCosine(0.1, 40, 4), 10, 4, 0.1)
    budget.on_train_begin()
    # the first (traced) epoch is left out of the mean once there are two (one input size: no progressive resizing)
    budget.epoch_seconds, budget.epoch_sizes = [12.0, 10.0], [0, 0]
    clock.now = 22.0
    assert budget.epochs_that_fit(2) == 4  # 38 s left = 3 more epochs of 10 s, capped at the 4 planned
    budget.before = 57.0  # 21 s left: 2 more at the mean of 10 s (it would be 1 at 11 s, the first epoch included)
    assert budget.epochs_that_fit(2) == 4
    budget.before = 62.0  # 16 s left: 1 more
    assert budget.epochs_that_fit(2) == 3
    budget.before = 70.0  # 8 s left: none
    assert budget.epochs_that_fit(2) == 2
    with pytest.raises(ValueError):
        TimeBudget(0.0)


def test_a_shortened_plan_grows_back_when_epochs_get_faster_but_not_beyond_the_phase():
    """A neighbour slows epochs 1-2 to 30 s: 100 s for 5 planned epochs cuts the plan to 3. Epoch 3 takes
    10 s: the mean (20 s) lets a fourth fit with half an epoch to spare, and the schedule is lengthened
    to end there; a fifth (40 s of the 30 s left) does not."""
    def run(bound: int, epoch_seconds: tuple[float, ...]) -> tuple[TimeBudget, list[int]]:
        clock.now, replans = 0.0, []
        budget = TimeBudget(100.0, on_replan=replans.append, clock=clock)
        budget.bind(WarmupCosine(0.1, 10 * bound, bound), 10, bound, 0.1)
        budget.model = _tiny_model()
        budget.on_train_begin()
        for seconds in epoch_seconds:
            budget.on_epoch_begin(0)
            clock.now += seconds
            budget.on_epoch_end(len(budget.epoch_seconds))
            if budget.model.stop_training:
                break
        return budget, replans

    clock = _Clock(0.0)
    budget, replans = run(5, (30.0, 30.0, 10.0, 10.0))
    assert replans == [3, 4] and budget.epochs == 4 and budget.model.stop_training
    assert budget.schedule.total_steps == 40 and clock.now == 80.0 <= 100.0
    # bound at 4 epochs: cut to 3 after two 30 s epochs, then a 1 s epoch leaves 39 s for epochs of
    # 15.5 s: two more would fit (5 in all), but the plan grows only to the phase's 4
    for bound, expected in ((4, [3, 4]), (5, [3, 5])):
        capped, replans = run(bound, (30.0, 30.0, 1.0))
        assert replans == expected and capped.epochs == expected[-1]


def _cfg(data_dir, out, **kw) -> TrainConfig:
    base = {"model": ModelConfig(name="cnn", width=4, dropout=0.0),
            "data": DataConfig(source=str(data_dir), val_split=0.0, limit=60, seed=0),
            "augment": AugmentConfig(flip=False, translate_px=0), "epochs": 4, "batch_size": 32,
            "optimizer": Optimizer.SGD, "lr": 0.05, "weight_decay": 0.0, "name": "run", "out": str(out),
            "time_budget_hours": 1e-7}  # 0.36 ms: no epoch fits after the first
    base.update(kw)
    return TrainConfig(**base)


def _epochs(model_dir) -> list[str]:
    with open(model_dir / "history.csv", newline="") as f:
        return [r["epoch"] for r in csv.DictReader(f)]


def test_train_stops_within_budget_and_resume_keeps_the_plan(tiny_data_dir, tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    first = train(_cfg(tiny_data_dir, tmp_path), progress=False, extra_callbacks=[Interrupt()])
    assert first.interrupted and _epochs(first.model_dir) == ["1"]
    state = json.loads((tmp_path / ".run.partial" / "state.json").read_text())
    assert state["planned_epochs"] == {"train": 1}  # saved with the epoch, before the interrupt
    done = resume(tmp_path / "run", progress=False)  # runs no further epoch: the plan was 1, not 4
    assert _epochs(done.model_dir) == ["1"]
    m = json.loads((done.model_dir / "metrics.json").read_text())
    assert m["epochs_run"] == 1 and m["epochs_planned"] == {"train": 1} and m["time_budget_hours"] == 1e-7
    assert json.loads((done.model_dir / "config.json").read_text())["time_budget_hours"] == 1e-7



def test_a_resumed_run_can_grow_its_checkpointed_plan_back_to_the_recipe(tiny_data_dir, tmp_path, monkeypatch, caplog):
    """Session 1: epochs of 100 s (a neighbour) in a 360 s budget cut 6 planned epochs to 3 after epoch 2,
    and the run is interrupted there. Session 2 (``--resume``): epochs take 10 s, so the first one
    measured grows the checkpointed plan of 3 back to the recipe's 6 (before, the resumed run was bound
    to the plan of 3). Epoch times come from a fake clock (train_seconds stay real: a few seconds)."""
    import functools

    from edgeclf.train import loop

    clock = _Clock(100.0)
    monkeypatch.setattr(loop, "TimeBudget", functools.partial(TimeBudget, clock=clock))

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    first = train(_cfg(tiny_data_dir, tmp_path, epochs=6, time_budget_hours=0.1), progress=False,
                  extra_callbacks=[clock.callback(), Interrupt()])
    assert first.interrupted and _epochs(first.model_dir) == ["1", "2"]
    state = json.loads((tmp_path / ".run.partial" / "state.json").read_text())
    assert state["planned_epochs"] == {"train": 3}
    clock.seconds = 10.0
    with caplog.at_level("INFO", logger="edgeclf.train.budget"):
        done = resume(tmp_path / "run", progress=False, extra_callbacks=[clock.callback()])
    assert _epochs(done.model_dir) == ["1", "2", "3", "4", "5", "6"]
    assert "can run 6 epochs again instead of 3" in caplog.text
    m = json.loads((done.model_dir / "metrics.json").read_text())
    assert m["epochs_run"] == 6 and m["epochs_planned"] == {"train": 6} and m["resumed"] == 1

def test_cli_time_budget_option(tiny_data_dir, tmp_path):
    with pytest.raises(ConfigError, match="time_budget_hours"):
        _cfg(tiny_data_dir, tmp_path, time_budget_hours=0.0)
    with pytest.raises(ConfigError, match="multi-worker"):
        _cfg(tiny_data_dir, tmp_path, distribute="multi-worker")
    r = run_cli(["train", "--model", "cnn-small", "--data", tiny_data_dir, "--time-budget", "-1", "--out", tmp_path])
    assert r.exit_code == 2 and "--time-budget" in r.output
    r = run_cli(["train", "--model", "cnn-small", "--data", tiny_data_dir, "--limit", "40", "--val-split", "0",
                 "--epochs", "3", "--time-budget", "1e-7", "--no-augment", "--name", "b", "--out", tmp_path])
    assert r.exit_code == 0, r.output
    assert _epochs(tmp_path / "b") == ["1"]


def test_cnn_recipe_budget_and_its_overrides(tiny_data_dir, tmp_path):
    """The cnn recipe: 90 epochs within 2 h; --time-budget 0 turns the budget off, a given one replaces
    it, and multi-worker training (which cannot re-plan) drops the recipe's budget but refuses a given one."""
    from edgeclf.cli.train import _time_budget

    data = DataConfig(source=str(tiny_data_dir), val_split=0.0)
    recipe = TrainConfig.from_recipe(ModelConfig(name="cnn"), data=data, **_time_budget(None))
    assert recipe.epochs == 90 and recipe.time_budget_hours == 2.0
    assert TrainConfig.from_recipe(ModelConfig(name="cnn"), data=data, **_time_budget(0)).time_budget_hours is None
    assert TrainConfig.from_recipe(ModelConfig(name="cnn"), data=data, **_time_budget(0.5)).time_budget_hours == 0.5
    assert TrainConfig.from_recipe(ModelConfig(name="cnn-small"), data=data).time_budget_hours is None
    multi = TrainConfig.from_recipe(ModelConfig(name="cnn"), data=data, distribute="multi-worker")
    assert multi.time_budget_hours is None and multi.epochs == 90
    with pytest.raises(ConfigError, match="multi-worker"):
        TrainConfig.from_recipe(ModelConfig(name="cnn"), data=data, distribute="multi-worker", **_time_budget(1.0))

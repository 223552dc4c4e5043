"""The per-epoch log line (``edgeclf.train.eta``): epoch time, the plan as the time budget left it, and
the time left in the phase."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from edgeclf._keras import keras
from edgeclf.data.dataset import ArraySplit
from edgeclf.train.budget import TimeBudget
from edgeclf.train.config import Optimizer
from edgeclf.train.eta import EpochETA, format_duration
from edgeclf.train.fit import FitPlan, fit


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (42.4, "42 s"), (60, "1 min"), (419, "7 min"),
                                               (3599, "1 h 0 min"), (4560, "1 h 16 min"), (7260, "2 h 1 min")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_time_left_leaves_out_the_first_epoch_once_another_is_measured(caplog):
    now = [0.0]
    eta = EpochETA(5, clock=lambda: now[0], wall=lambda: 3600.0)  # wall clock at 01:00 UTC
    with caplog.at_level(logging.INFO, logger="edgeclf.train.eta"):
        for epoch, seconds in enumerate((30.0, 10.0, 10.0, 10.0, 10.0)):
            eta.on_epoch_begin(epoch)
            now[0] += seconds
            eta.on_epoch_end(epoch, {"loss": 0.5, "accuracy": 0.75})
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "epoch 1/5: 30 s (loss 0.5000, top-1 0.7500); 4 more, about 2 min (ends about 01:02 UTC)"
    assert lines[1].endswith("3 more, about 30 s (ends about 01:00 UTC)")  # 3 x 10 s: the traced first left out
    assert lines[4] == "epoch 5/5: 10 s (loss 0.5000, top-1 0.7500)"  # the last: nothing left to estimate


def test_the_line_follows_the_plan_the_time_budget_re_planned(caplog):
    """100 s of budget, 5 planned epochs of 30 s: after epoch 2 the budget cuts the plan to 3, and the
    line says 2/3 where Keras' bar still says 2/5."""
    hist, lines = _fit_on_a_fake_clock(caplog, budget_seconds=100.0, epoch_seconds=30.0, epochs=5)
    assert len(hist.history["loss"]) == 3
    assert [line.split(":")[0] for line in lines] == ["epoch 1/5", "epoch 2/3", "epoch 3/3"]
    assert "; 1 more, about 30 s" in lines[1]


def test_after_the_first_epoch_a_plan_past_the_budget_is_reported_with_the_budget_s_end(caplog):
    """200 s of budget, 10 planned epochs of 60 s: the budget plans only from the second epoch on, so after
    the first the 9 planned epochs left (9 min) overrun it and the line says so, with the budget's end."""
    hist, lines = _fit_on_a_fake_clock(caplog, budget_seconds=200.0, epoch_seconds=60.0, epochs=10)
    assert len(hist.history["loss"]) == 3  # 60 s each: two more fit in the 140 s left after the first
    assert lines[0].startswith("epoch 1/10: 1 min") and re.search(
        r"; 9 more would take about 9 min, past the 3 min time budget, which shortens the plan from the second "
        r"epoch on \(ends by about \d\d:\d\d UTC\)$", lines[0]), lines[0]
    assert lines[1].startswith("epoch 2/3") and "; 1 more, about 1 min (ends about" in lines[1]


def _fit_on_a_fake_clock(caplog, budget_seconds: float, epoch_seconds: float, epochs: int):
    """``fit`` a one-layer model for ``epochs`` epochs under a ``budget_seconds`` TimeBudget whose clock
    advances ``epoch_seconds`` per epoch; -> (History, the EpochETA log lines)."""
    now = [0.0]

    class Tick(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):  # after the budget and EpochETA read the clock
            now[0] += epoch_seconds

    rng = np.random.default_rng(0)
    train = ArraySplit(rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8), rng.integers(0, 2, 32))
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inp)))
    budget = TimeBudget(budget_seconds, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="edgeclf.train.eta"):
        hist = fit(model, train, 2, FitPlan(optimizer=Optimizer.SGD, lr=0.01, batch_size=16), epochs, [Tick()],
                   budget=budget)
    return hist, [r.getMessage() for r in caplog.records if r.name == "edgeclf.train.eta"]

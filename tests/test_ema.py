"""EMA of the weights (``edgeclf train --ema-decay``): the model ``fit`` ends with is the moving
average of the weights after every step, recomputed here; validation runs on the averaged weights;
``ema_weights`` swaps them in and back; a run records the decay; the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _cli import run_cli as _run_cli

from edgeclf._keras import keras
from edgeclf.data import DataConfig
from edgeclf.data.dataset import ArraySplit
from edgeclf.errors import ConfigError
from edgeclf.models import ModelConfig
from edgeclf.train import load_config, train
from edgeclf.train.config import Optimizer, TrainConfig
from edgeclf.train.ema import ema_weights, has_ema
from edgeclf.train.fit import FitPlan, fit


def _data(n: int = 96, seed: int = 0) -> ArraySplit:
    rng = np.random.default_rng(seed)
    return ArraySplit(x=rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8), labels=np.arange(n, dtype=np.int32) % 3)


def _linear() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 4, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inp))
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))


class _WeightLog(keras.callbacks.Callback):
    """The model's weights before training and after every optimizer step."""

    def __init__(self):
        super().__init__()
        self.steps: list[list[np.ndarray]] = []

    def on_train_begin(self, logs=None):
        self.steps.append([w.copy() for w in self.model.get_weights()])

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([w.copy() for w in self.model.get_weights()])


@pytest.mark.parametrize("decay", [0.0, 0.8])
def test_fit_ends_with_the_moving_average_of_the_weights(decay):
    model, weights = _linear(), _WeightLog()
    plan = FitPlan(optimizer=Optimizer.SGD, lr=0.5, batch_size=16, seed=0, ema_decay=decay)
    fit(model, _data(), 3, plan, epochs=2, callbacks=[weights])
    assert len(weights.steps) == 1 + 2 * 6
    expected = weights.steps[0]
    for step in weights.steps[1:]:  # average_t = decay * average_(t-1) + (1 - decay) * w_t, from w_0
        expected = [decay * a + (1 - decay) * w for a, w in zip(expected, step)]
    final = model.get_weights()
    for f, e, last in zip(final, expected, weights.steps[-1]):
        np.testing.assert_allclose(f, e, rtol=1e-5, atol=1e-6)
        if decay:  # the steps moved the weights, so the average is not the last step's weights
            assert np.abs(f - last).max() > 1e-3


def test_validation_runs_on_the_averaged_weights():
    model = _linear()
    plan = FitPlan(optimizer=Optimizer.SGD, lr=0.5, batch_size=16, seed=0, ema_decay=0.9)
    val = _data(48, seed=1)
    history = fit(model, _data(), 3, plan, epochs=1, validation=val)
    # after one epoch the model holds the average, which the epoch's validation must have seen
    val_ds = (val.x, keras.utils.to_categorical(val.labels, 3))
    loss = model.evaluate(*val_ds, batch_size=256, verbose=0)[0]
    assert history.history["val_loss"][0] == pytest.approx(loss, rel=1e-5)


def test_ema_weights_swaps_the_average_in_and_back():
    model = _linear()
    plan = FitPlan(optimizer=Optimizer.ADAM, lr=0.05, batch_size=16, seed=0, ema_decay=0.9)
    fit(model, _data(), 3, plan, epochs=1)
    assert has_ema(model)
    average = [v.numpy().copy() for v in model.optimizer._model_variables_moving_average]
    model.get_layer(index=-1).kernel.assign_add(np.ones_like(average[0]))  # own weights now differ from the average
    own = [w.copy() for w in model.get_weights()]
    with ema_weights(model):
        np.testing.assert_array_equal(model.get_layer(index=-1).kernel.numpy(), average[0])
    np.testing.assert_array_equal(model.get_weights()[0], own[0])
    np.testing.assert_array_equal(model.optimizer._model_variables_moving_average[0].numpy(), average[0])
    plain = _linear()
    plain.compile(optimizer="adam", loss="categorical_crossentropy")
    assert not has_ema(plain)
    with ema_weights(plain):  # nothing to swap: a no-op
        pass


def test_an_ema_run_records_the_decay_and_trains(tiny_data_dir, tmp_path):
    cfg = TrainConfig(model=ModelConfig(name="cnn", width=4, dropout=0.0),
                      data=DataConfig(source=str(tiny_data_dir), val_split=0.1, seed=0), epochs=2, batch_size=32,
                      optimizer=Optimizer.ADAM, lr=3e-3, weight_decay=0.0, ema_decay=0.9, name="ema",
                      out=str(tmp_path), seed=0)
    result = train(cfg, progress=False)
    assert load_config(result.model_dir).ema_decay == 0.9
    assert 0 <= json.loads((result.model_dir / "metrics.json").read_text())["top1_acc"] <= 1


def test_a_decay_outside_0_1_is_refused(tiny_data_dir, tmp_path):
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="ema_decay"):
        FitPlan(optimizer=Optimizer.ADAM, lr=1e-3, batch_size=8, ema_decay=-0.1)
    r = _run_cli(["train", "--data", tiny_data_dir, "--ema-decay", "1", "--out", tmp_path / "o"])
    assert r.exit_code == 2, r.output
    assert "--ema-decay" in r.output
    assert not (tmp_path / "o").exists()


class _OptimizerState(keras.callbacks.Callback):
    """The optimizer's variables (the weight averages among them) when ``fit`` begins, after
    BackupAndRestore restored them, and after every epoch; KeyboardInterrupt after ``stop_after``."""

    def __init__(self, stop_after: int | None = None):
        super().__init__()
        self.stop_after, self.begins, self.ends = stop_after, [], []

    def _snap(self) -> dict[str, np.ndarray]:
        return {v.name: v.numpy().copy() for v in self.model.optimizer.variables}

    def on_train_begin(self, logs=None):
        self.begins.append(self._snap())

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(self._snap())
        if self.stop_after is not None and len(self.ends) >= self.stop_after:
            raise KeyboardInterrupt


def test_resume_continues_the_average(tiny_data_dir, tmp_path):
    from edgeclf.train import resume

    cfg = TrainConfig(model=ModelConfig(name="cnn", width=4, dropout=0.0),
                      data=DataConfig(source=str(tiny_data_dir), val_split=0.1, limit=150, seed=0), epochs=3,
                      batch_size=32, optimizer=Optimizer.SGD, lr=0.05, weight_decay=0.0, ema_decay=0.9, name="run",
                      out=str(tmp_path), seed=0)
    stop = _OptimizerState(stop_after=1)
    assert train(cfg, progress=False, extra_callbacks=[stop]).interrupted
    rec = _OptimizerState()
    resume(tmp_path / "run", progress=False, extra_callbacks=[rec])
    averages = [k for k in stop.ends[0] if k.startswith("average/") or "/average/" in k]
    assert averages and rec.begins[0].keys() == stop.ends[0].keys()
    for k in averages:  # restored as they were after epoch 1, not restarted from the weights
        np.testing.assert_array_equal(rec.begins[0][k], stop.ends[0][k], err_msg=k)

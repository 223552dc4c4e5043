"""Resuming interrupted training runs (``edgeclf train --resume``): the checkpoint ``OUT/.NAME.partial``,
continuation at the right epoch with the optimizer state and schedule position, the two-phase
boundary, a SIGKILLed run, early stopping as EarlyStopping does it, and the CLI's refusals."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _cli import run_cli as _run_cli

from edgeclf._keras import keras
from edgeclf._machine import machine_facts
from edgeclf.data import AugmentConfig, DataConfig
from edgeclf.errors import ConfigError
from edgeclf.models import ModelConfig
from edgeclf.models import mobilenet_v2 as mnv2
from edgeclf.models.io import load_keras_model
from edgeclf.train import load_config, resume, train
from edgeclf.train.checkpoint import early_stop
from edgeclf.train.config import Optimizer, TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _cfg(data_dir: Path, out: Path, **kw) -> TrainConfig:
    base = {"model": ModelConfig(name="cnn", width=4, dropout=0.0),
            "data": DataConfig(source=str(data_dir), val_split=0.1, limit=150, seed=0),
            "augment": AugmentConfig(flip=True, translate_px=2), "epochs": 4, "batch_size": 32,
            "optimizer": Optimizer.SGD, "lr": 0.05, "warmup_fraction": 0.25, "weight_decay": 0.0,
            "label_smoothing": 0.0, "name": "run", "out": str(out), "seed": 0}
    base.update(kw)
    return TrainConfig(**base)


def _history(model_dir: Path) -> list[dict]:
    with open(model_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


class _Record(keras.callbacks.Callback):
    """Snapshots (optimizer iterations, weights by name, optimizer variables) when each ``fit``
    begins (after BackupAndRestore restored) and after every epoch; the epochs begun; optionally
    raises ``exc`` after ``stop_after`` epochs (like Ctrl-C or a crash)."""

    def __init__(self, stop_after: int | None = None, exc: BaseException = KeyboardInterrupt()):
        super().__init__()
        self.stop_after, self.exc = stop_after, exc
        self.begins, self.ends, self.epochs_begun = [], [], []

    def _snap(self) -> dict:
        opt = self.model.optimizer
        weights = {w.name: w.numpy().copy() for w in self.model.weights}
        assert len(weights) == len(self.model.weights)
        return {"iterations": int(opt.iterations), "weights": weights,
                "opt": [v.numpy().copy() for v in opt.variables()]}

    def on_train_begin(self, logs=None):
        self.begins.append(self._snap())

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs_begun.append(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(self._snap())
        if self.stop_after is not None and len(self.ends) >= self.stop_after:
            raise self.exc


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_resume_continues_at_the_next_epoch_with_optimizer_and_schedule(tiny_data_dir, tmp_path):
    cfg = _cfg(tiny_data_dir, tmp_path)
    # the uninterrupted run, for comparison
    full_rec = _Record()
    full = train(cfg.with_(name="full"), progress=False, extra_callbacks=[full_rec])
    steps = math.ceil(full.metrics["n_train"] / cfg.batch_size)
    assert full_rec.ends[-1]["iterations"] == 4 * steps

    stop = _Record(stop_after=2)
    first = train(cfg, progress=False, extra_callbacks=[stop])
    ckpt = tmp_path / ".run.partial"
    assert first.interrupted and first.checkpoint == ckpt
    state = json.loads((ckpt / "state.json").read_text())
    assert state["epochs_done"] == 2 and state["phase"] == "train" and state["phases_done"] == 0
    assert load_config(ckpt) == cfg
    before = _history(first.model_dir)
    assert len(before) == 2
    # a new run under the same name must not overwrite the unfinished one
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, progress=False)

    rec = _Record()
    result = resume(tmp_path / "run", progress=False, extra_callbacks=[rec])
    # continues with epoch 3 of 4, from the weights, optimizer slots and step count of epoch 2
    assert rec.epochs_begun == [2, 3]
    assert rec.begins[0]["iterations"] == 2 * steps
    _assert_same(rec.begins[0]["weights"], stop.ends[1]["weights"])
    assert len(rec.begins[0]["opt"]) == len(stop.ends[1]["opt"]) > 1  # iterations + momentum slots
    for a, b in zip(rec.begins[0]["opt"], stop.ends[1]["opt"]):
        np.testing.assert_array_equal(a, b)
    # the schedule ends where the uninterrupted run's did
    assert rec.ends[-1]["iterations"] == full_rec.ends[-1]["iterations"] == 4 * steps

    rows, full_rows = _history(result.model_dir), _history(full.model_dir)
    assert len(rows) == len(full_rows) == 4
    assert [(r["epoch"], r["phase"]) for r in rows] == [(r["epoch"], r["phase"]) for r in full_rows]
    assert rows[:2] == before  # the interrupted run's epochs are kept as they were
    m = result.metrics
    assert not result.interrupted and result.checkpoint is None
    assert m["epochs_run"] == 4 and m["resumed"] == 1 and m["interrupted"] is False
    assert m["train_seconds"] >= first.metrics["train_seconds"]
    assert {p.name for p in tmp_path.iterdir()} == {"run", "full"}  # the checkpoint is gone
    # machine.json: the CPU of the finishing session, and of each session before a resume
    here = machine_facts()
    for run_dir, earlier in ((full.model_dir, 0), (result.model_dir, 1)):
        machine = json.loads((run_dir / "machine.json").read_text())
        assert machine["cpu_model"] == here["cpu_model"] and machine["simd_flags"] == here["simd_flags"]
        assert len(machine["earlier_sessions"]) == earlier and len(machine["load_average_end"]) == 3
    assert json.loads((result.model_dir / "machine.json").read_text())["earlier_sessions"][0]["cpu_id"] == here["cpu_id"]


def test_two_phase_resume_after_a_crash_at_the_phase_boundary(tiny_data_dir, tmp_path):
    cfg = _cfg(tiny_data_dir, tmp_path, model=ModelConfig(name="mobilenet_v2", weights="none", img_size=32,
                                                            alpha=0.35, dropout=0.0),
               data=DataConfig(source=str(tiny_data_dir), val_split=0.1, limit=60, seed=0),
               optimizer=Optimizer.ADAM, lr=3e-3, head_epochs=1, epochs=2, fine_tune_layers=10,
               fine_tune_lr=1e-3, batch_size=16, name="mnv2")
    crash = _Record(stop_after=1, exc=RuntimeError("crash"))
    with pytest.raises(RuntimeError, match="crash"):
        train(cfg, progress=False, extra_callbacks=[crash])
    # a crash after a finished epoch keeps the checkpoint (and writes no model directory)
    assert {p.name for p in tmp_path.iterdir()} == {".mnv2.partial"}
    assert json.loads((tmp_path / ".mnv2.partial" / "state.json").read_text())["epochs_done"] == 1

    rec = _Record()
    result = resume(tmp_path / ".mnv2.partial", progress=False, extra_callbacks=[rec])
    rows = _history(result.model_dir)
    assert [(r["epoch"], r["phase"]) for r in rows] == [("1", "head"), ("2", "fine-tune"), ("3", "fine-tune")]
    # the head phase was already complete: its fit restores and runs no epoch; fine-tuning starts
    # from the head phase's final weights with a fresh optimizer
    assert rec.epochs_begun == [0, 1]
    assert len(rec.begins) == 2 and rec.begins[1]["iterations"] == 0
    _assert_same(rec.begins[1]["weights"], crash.ends[0]["weights"])
    # fine-tuning trained the last 10 base layers only
    base = {w.name for w in mnv2.base_model(load_keras_model(result.model_dir)).weights}
    after = rec.ends[-1]["weights"]
    changed = {n for n in base if not np.array_equal(after[n], crash.ends[0]["weights"][n])}
    assert "Conv_1/kernel:0" in changed and "Conv1/kernel:0" not in changed
    assert result.metrics["epochs_run"] == 3 and not (tmp_path / ".mnv2.partial").exists()


_CHILD = """
import json, sys, time
from pathlib import Path
from edgeclf._keras import keras
from edgeclf._machine import machine_facts
from edgeclf.train import train
from edgeclf.train.config import TrainConfig

class Hang(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            Path(sys.argv[2]).write_text("epoch 2")
            time.sleep(600)

train(TrainConfig.from_dict(json.loads(Path(sys.argv[1]).read_text())), progress=False, extra_callbacks=[Hang()])
"""


def test_a_sigkilled_run_resumes_from_its_last_checkpoint(tiny_data_dir, tmp_path):
    cfg = _cfg(tiny_data_dir, tmp_path, epochs=3)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    marker = tmp_path / "hanging"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, tmp_path / "cfg.json", marker], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 1200  # generous: the suite may run on busy cores
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child never reached epoch 3"
            time.sleep(0.2)
        # while the child trains, its checkpoint is locked
        with pytest.raises(ConfigError, match="another edgeclf training run"):
            resume(tmp_path / "run", progress=False)
    finally:
        proc.kill()  # SIGKILL: no Python cleanup runs
        proc.wait()
    assert {p.name for p in tmp_path.iterdir()} == {".run.partial", "cfg.json", "hanging"}
    assert json.loads((tmp_path / ".run.partial" / "state.json").read_text())["epochs_done"] == 2

    r = _run_cli(["train", "--resume", tmp_path / "run"])
    assert r.exit_code == 0, r.output
    assert f"-> {tmp_path / 'run'}" in r.output
    assert [row["epoch"] for row in _history(tmp_path / "run")] == ["1", "2", "3"]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["resumed"] == 1 and m["epochs_run"] == 3
    assert not (tmp_path / ".run.partial").exists()


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_early_stop_matches_keras_early_stopping(patience):
    rng = np.random.default_rng(patience)

    class _Model:
        stop_training = False

    for _ in range(20):
        accs = rng.integers(0, 5, size=12) / 4  # many ties
        es = keras.callbacks.EarlyStopping("val_accuracy", patience=patience, mode="max")
        es.set_model(_Model())
        es.on_train_begin()
        for i, acc in enumerate(accs):
            es.on_epoch_end(i, {"val_accuracy": acc})
            rows = [{"val_accuracy": a} for a in accs[:i + 1]]
            assert early_stop(rows, patience) == es.model.stop_training, (accs, i)
            if es.model.stop_training:
                break


def test_cli_resume_refuses_other_options_and_missing_checkpoints(tmp_path):
    r = _run_cli(["train", "--resume", tmp_path / "run", "--lr", "0.1", "--epochs", "3"])
    assert r.exit_code == 2 and "Usage:" in r.output
    assert "drop --epochs, --lr" in r.output
    r = _run_cli(["train", "--resume", tmp_path / "run"])
    assert r.exit_code == 1
    assert r.output.strip() == (f"Error: {tmp_path / 'run'}: no such directory, and no checkpoint "
                                f"{tmp_path / '.run.partial'} beside it; nothing to resume")


@pytest.mark.parametrize(("typed", "what"), [
    ("nope", "no such directory, and no checkpoint .nope.partial beside it"),
    ("afile", "not a directory (--resume takes a model directory OUT/NAME or its checkpoint OUT/.NAME.partial)"),
    ("done", "this run finished (its checkpoint .done.partial is deleted at the end of a run)"),
    ("./other/", "not an edgeclf model directory, and no checkpoint .other.partial beside it"),
    (".nope.partial", "no such checkpoint directory"),
    (".empty.partial", "not a training checkpoint (no config.json in it)"),
])
def test_cli_resume_names_the_relative_path_as_typed(tmp_path, monkeypatch, typed, what):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "model.keras").write_text("")
    (tmp_path / "other").mkdir()
    (tmp_path / ".empty.partial").mkdir()
    monkeypatch.chdir(tmp_path)
    r = _run_cli(["train", "--resume", typed])
    assert r.exit_code == 1
    assert r.output.strip() == f"Error: {typed}: {what}; nothing to resume"


def test_cli_resume_dot_is_the_current_directory(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(run)
    r = _run_cli(["train", "--resume", "."])
    assert r.exit_code == 1
    assert r.output.strip() == (f"Error: .: not an edgeclf model directory, and no checkpoint "
                                f"{tmp_path / '.run.partial'} beside it; nothing to resume")

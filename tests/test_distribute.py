"""``edgeclf train --distribute multi-worker``: two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy).

Checks that both workers ran the steps, that only the chief (worker 0) wrote the output root, that
the non-chief's temporary directory is gone, and that the model has the single-process run's input
shape, output shape and classes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import REPO

TIMEOUT_S = 900  # both processes together (--limit 60: 2 synchronised steps per epoch, 2 epochs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_local_workers_train_and_only_the_chief_writes(tiny_data_dir, tiny_model_dir, tmp_path):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    cmd = [sys.executable, "-m", "edgeclf.cli", "train", "--model", "cnn", "--width", "4", "--data",
           str(tiny_data_dir), "--epochs", "2", "--limit", "60", "--batch-size", "32", "--optimizer", "adam", "--lr", "3e-3",
           "--distribute", "multi-worker", "--out", str(out), "--name", "mw", "--seed", "0"]
    procs = []
    for i in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
               "TMPDIR": str(tmp), "PYTHONPATH": str(REPO), "EDGECLF_STREAM": os.environ.get("EDGECLF_STREAM", "")}
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("the two workers did not finish in time")
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"worker {i}:\n{log[-3000:]}"
        assert f"worker {i} of 2 worker(s), 2 replica(s) in sync" in log, log[-3000:]
        assert "Epoch 2/2" in log  # both ran both epochs (the steps are collective: neither can run alone)
    assert "worker done; the chief wrote" in logs[1] and "test top-1 accuracy" in logs[0]
    # only the chief wrote: the model directory and nothing else (no checkpoint, no worker files)
    assert sorted(p.name for p in out.iterdir()) == ["mw"]
    assert list(tmp.iterdir()) == []  # the non-chief's temporary directory is deleted
    model_dir = out / "mw"
    for name in ("model.keras", "config.json", "labels.txt", "metrics.json", "history.csv"):
        assert (model_dir / name).is_file(), name
    assert json.loads((model_dir / "config.json").read_text())["distribute"] == "multi-worker"
    assert (model_dir / "labels.txt").read_text() == (tiny_model_dir / "labels.txt").read_text()

    from edgeclf.models.io import load_keras_model

    multi, single = load_keras_model(model_dir), load_keras_model(tiny_model_dir)
    assert multi.input_shape == single.input_shape
    assert multi.output_shape == single.output_shape
    assert [w.shape for w in multi.weights] == [w.shape for w in single.weights]


def test_multi_worker_without_tf_config_is_a_usage_error(tiny_data_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["PYTHONPATH"] = str(REPO)
    res = subprocess.run([sys.executable, "-m", "edgeclf.cli", "train", "--data", str(tiny_data_dir), "--epochs", "1",
                          "--distribute", "multi-worker", "--out", str(tmp_path / "o")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "Error:" in res.stderr and "TF_CONFIG" in res.stderr
    assert not (tmp_path / "o").exists()

"""SIGTERM behaves like Ctrl-C: the command cleans up and exits with 128 + 15 = 143.

Real subprocesses (a signal must reach a real process). Each test waits until the process has
installed its SIGTERM handler (bit 15 of ``SigCgt`` in /proc/PID/status) and has reached the phase
under test, sends SIGTERM, then checks: exit status 143, no traceback, no child process left, and
no temporary file in the model directory, the output directory or $TMPDIR.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _bad_input import empty, no_temp_files
from _runtime_fixtures import build_models, write_labelled_folder

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


def _start(args, tmpdir: Path) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "edgeclf.cli", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _handles_sigterm(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(next(line.split()[1] for line in text.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _wait_for(cond, proc: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert proc.poll() is None, f"ended early ({proc.returncode}):\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "timed out waiting for the phase under test"
        time.sleep(0.05)


def _terminate(proc: subprocess.Popen, timeout_s: float = 60.0) -> str:
    """Send SIGTERM; -> the output. Asserts exit status 143 and no traceback."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 143, (proc.returncode, out)
    assert "Traceback" not in out, out
    assert "stopped by SIGTERM" in out, out
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory)


def test_sigterm_during_bench_ends_the_worker_and_removes_its_scratch_dir(models, tmp_path, tmpdir_env):
    model = Path(shutil.copytree(models.model_dir, tmp_path / "model"))
    data = write_labelled_folder(tmp_path / "data" / "test", models.images, models.labels_true).parent
    (data / "train").symlink_to(data / "test")  # the layout DIR/{train,test}/<class>/ (bench reads test/)
    m = json.loads((model / "manifest.json").read_text())
    m["labels"] = sorted(m["labels"])  # folder classes come sorted; what they mean does not matter here
    (model / "manifest.json").write_text(json.dumps(m))
    out = tmp_path / "results"
    proc = _start(["bench", model, "--out", out, "--data", data, "--no-keras", "--no-baseline",
                   "--min-seconds", "60", "--min-iters", "1000000"], tmpdir_env)
    workers: list[int] = []

    def worker_running() -> bool:
        workers[:] = [c for c in _children(proc.pid) if "edgeclf.bench.worker" in
                      Path(f"/proc/{c}/cmdline").read_text(errors="replace")]
        return bool(workers)

    _wait_for(worker_running, proc)
    _terminate(proc)
    time.sleep(0.2)
    assert not any(_alive(w) for w in workers), workers
    assert not out.exists()
    empty(tmpdir_env)  # the bench's edgeclf-bench-* work dir (worker files, autograph modules) is gone
    no_temp_files(model)


def test_sigterm_during_predict_writes_nothing(models, tmp_path, tmpdir_env):
    folder = write_labelled_folder(tmp_path / "imgs", models.images, models.labels_true)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(20000):  # hard links: 20000 distinct files (no dedup) that cost no disk space
        os.link(next(folder.rglob("*.png")), many / f"{i:05d}.png")
    proc = _start(["predict", models.model_dir, many, "--batch-size", "1", "--json", tmp_path / "out" / "p.json"],
                  tmpdir_env)
    _wait_for(lambda: _handles_sigterm(proc.pid), proc)
    time.sleep(1.0)
    _terminate(proc)
    assert not (tmp_path / "out").exists()
    empty(tmpdir_env)


def test_sigterm_during_train_keeps_the_checkpoint_and_exits_143(tiny_data_dir, tmp_path, tmpdir_env):
    out = tmp_path / "out"
    proc = _start(["train", "--model", "cnn", "--width", "4", "--data", tiny_data_dir, "--epochs", "500",
                   "--limit", "30", "--batch-size", "8", "--name", "m", "--out", out], tmpdir_env)
    state = out / ".m.partial" / "state.json"

    def one_epoch_done() -> bool:
        try:
            return len(json.loads(state.read_text())["history"]) >= 1
        except (OSError, ValueError, KeyError):
            return False

    _wait_for(one_epoch_done, proc)
    text = _terminate(proc, timeout_s=120)
    assert "interrupted" in text and "--resume" in text, text  # as Ctrl-C: best weights saved, checkpoint kept
    assert json.loads((out / "m" / "metrics.json").read_text())["interrupted"] is True
    assert (out / ".m.partial").is_dir()
    no_temp_files(out / "m")
    assert not [p for p in out.iterdir() if ".new-" in p.name or ".old-" in p.name]
    empty(tmpdir_env)


def test_sigterm_during_export_keeps_the_manifest_consistent(tiny_model_dir, tmp_path, tmpdir_env):
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    proc = _start(["export", model], tmpdir_env)  # the default six artifacts: tflite first, then onnx
    _wait_for(lambda: (model / "manifest.json").is_file(), proc)
    _terminate(proc, timeout_s=120)
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["artifacts"]
    for entry in manifest["artifacts"]:  # every listed file is there, complete
        import hashlib

        assert hashlib.sha256((model / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    listed = {e["file"] for e in manifest["artifacts"]}
    assert {p.name for p in model.glob("model_*.*") if p.suffix in (".tflite", ".onnx")} <= listed
    no_temp_files(model)
    empty(tmpdir_env)  # tf2onnx's edgeclf-onnx-* directory and TensorFlow's autograph modules too


def test_sigterm_during_webcam_ends_like_ctrl_c(models, tmp_path, tmpdir_env):
    from _runtime_fixtures import write_video

    video = write_video(tmp_path / "clip.mp4", n_frames=600, size=(320, 240))
    out = tmp_path / "out"
    proc = _start(["webcam", models.model_dir, "--source", video, "--headless", "--save", out / "a.mp4"], tmpdir_env)
    def writing() -> bool:  # frames are flowing: the temporary video file has bytes
        try:
            return _handles_sigterm(proc.pid) and any(p.stat().st_size > 0 for p in out.iterdir())
        except OSError:
            return False

    _wait_for(writing, proc)
    text = _terminate(proc)
    assert "interrupted (terminated by SIGTERM)" in text, text
    no_temp_files(out)  # the annotated video is either complete or absent, never a temporary file
    empty(tmpdir_env)

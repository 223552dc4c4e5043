"""What a user's environment can break, through the real CLI in a subprocess: a read-only model
directory, an output path below a regular file, a full disk. Each must end in exactly one
``Error:`` line naming the user's path (never a temporary name), a non-zero exit, no traceback and
nothing half-written. Also: written files and directories honour the umask.

Tests run as root in CI, and root ignores permission bits; so for the read-only cases the
subprocess drops ``CAP_DAC_OVERRIDE``/``CAP_DAC_READ_SEARCH``/``CAP_FOWNER`` from its capability
bounding set before exec (it stays uid 0, owner of every fixture, but permission bits now apply to
it as to any user). A full disk is simulated with ``RLIMIT_FSIZE`` (``ulimit -f``): CPython ignores
SIGXFSZ, so writes beyond the limit fail with EFBIG.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from _runtime_fixtures import build_models, write_labelled_folder, write_video

from edgeclf._io import atomic_path, make_temp_dir, reported_as, write_text

ROOT = Path(__file__).resolve().parents[1]
EDGECLF = [sys.executable, "-m", "edgeclf.cli"]
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return build_models(tmp_path_factory)


@pytest.fixture(scope="module")
def folder(models, tmp_path_factory):
    return write_labelled_folder(tmp_path_factory.mktemp("labelled"), models.images, models.labels_true)


def _preexec(honest_permissions: bool = False, fsize: int | None = None, umask: int | None = None):
    """A ``preexec_fn`` for subprocess: permission bits apply even to root, a file size limit, a umask."""

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: no dlopen in the child

    def run() -> None:
        if umask is not None:
            os.umask(umask)
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        if honest_permissions and os.geteuid() == 0:
            for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
                if prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))

    return run


def _run(args, **preexec) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([*EDGECLF, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False, preexec_fn=_preexec(**preexec))


@pytest.fixture(scope="module")
def read_only_dir_works(tmp_path_factory):
    """Skip unless a subprocess really cannot write into a 0555 directory (see the module docstring)."""
    d = tmp_path_factory.mktemp("probe")
    d.chmod(0o555)
    try:
        r = subprocess.run([sys.executable, "-c", f"open({str(d / 'x')!r}, 'w')"], capture_output=True, text=True,
                           check=False, preexec_fn=_preexec(honest_permissions=True))
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot drop CAP_DAC_OVERRIDE for a subprocess (no CAP_SETPCAP?): {exc}")
    finally:
        d.chmod(0o755)
    if "PermissionError" not in r.stderr:
        pytest.skip("a 0555 directory is writable for this process even without CAP_DAC_OVERRIDE")


def _snapshot(d: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (and '<dir>' for directories) below ``d``."""
    return {str(p.relative_to(d)): "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*"))}


def _assert_one_error(r: subprocess.CompletedProcess, names: Path) -> str:
    """The contract: exit != 0, no traceback, exactly one ``Error:`` line, naming ``names``, no temp name."""
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, out
    assert str(names) in lines[0], lines[0]
    assert ".tmp" not in lines[0] and ".partial-" not in lines[0], lines[0]
    return lines[0]


def _no_temp_files(d: Path) -> None:
    left = [p for p in d.rglob(".*") if ".tmp" in p.name or ".partial-" in p.name]
    assert not left, left


def _read_only_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    dst.chmod(0o555)
    return dst


@pytest.mark.usefixtures("read_only_dir_works")
def test_predict_json_into_read_only_model_dir(models, folder, tmp_path):
    model = _read_only_copy(models.model_dir, tmp_path / "model")
    before = _snapshot(model)
    try:
        r = _run(["predict", model, folder, "--json", model / "predictions.json"], honest_permissions=True)
        line = _assert_one_error(r, model / "predictions.json")
        assert "Permission denied" in line
        assert _snapshot(model) == before
    finally:
        model.chmod(0o755)


@pytest.mark.usefixtures("read_only_dir_works")
def test_eval_into_read_only_model_dir(tiny_model_dir, tmp_path):
    model = _read_only_copy(tiny_model_dir, tmp_path / "model")
    before = _snapshot(model)
    try:
        r = _run(["eval", model], honest_permissions=True)
        line = _assert_one_error(r, model / "metrics.json")
        assert "Permission denied" in line
        assert _snapshot(model) == before  # metrics.json and the plots are untouched
    finally:
        model.chmod(0o755)


@pytest.mark.parametrize("option", ["--json", "--csv"])
def test_predict_output_below_a_regular_file(models, folder, tmp_path, option):
    blocker = tmp_path / "results"
    blocker.write_text("I am a file\n")
    target = blocker / "sub" / "predictions.out"
    r = _run(["predict", models.model_dir, folder, option, target])
    line = _assert_one_error(r, target)
    assert f"{blocker} is a file, not a directory" in line
    assert blocker.read_text() == "I am a file\n" and sorted(os.listdir(tmp_path)) == ["results"]


def test_webcam_save_below_a_regular_file(models, tmp_path):
    video = write_video(tmp_path / "clip.mp4", n_frames=5)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _run(["webcam", models.model_dir, "--source", video, "--headless", "--save", blocker / "out.mp4"])
    line = _assert_one_error(r, blocker / "out.mp4")
    assert f"{blocker} is a file, not a directory" in line
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "file"]


def test_train_out_is_a_regular_file(tiny_data_dir, tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("x")
    r = _run(["train", "--model", "cnn", "--width", "4", "--data", tiny_data_dir, "--epochs", "1",
              "--limit", "30", "--name", "m", "--out", blocker])
    line = _assert_one_error(r, blocker / "m")
    assert f"{blocker} is a file, not a directory" in line
    assert blocker.read_text() == "x" and sorted(os.listdir(tmp_path)) == ["out"]


def test_disk_full_while_writing_predictions(models, folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old = out / "predictions.json"
    old.write_text('{"old": true}\n')
    r = _run(["predict", models.model_dir, folder, "--json", old], fsize=1024)
    line = _assert_one_error(r, old)
    assert os.strerror(errno.EFBIG) in line
    assert old.read_text() == '{"old": true}\n'  # the previous result survives intact
    assert sorted(os.listdir(out)) == ["predictions.json"]


def test_disk_full_while_saving_video(models, tmp_path):
    video = write_video(tmp_path / "clip.mp4", n_frames=30)
    out = tmp_path / "out"
    out.mkdir()
    r = _run(["webcam", models.model_dir, "--source", video, "--headless", "--save", out / "annotated.mp4"],
             fsize=16 * 1024)  # OpenCV's writer ignores EFBIG: the incomplete file must be caught
    _assert_one_error(r, out / "annotated.mp4")
    assert os.listdir(out) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_cli_outputs_honour_the_umask(models, folder, tmp_path, umask):
    j, c = tmp_path / "new" / "dir" / "p.json", tmp_path / "p.csv"
    r = _run(["predict", models.model_dir, folder, "--json", j, "--csv", c], umask=umask)
    assert r.returncode == 0, r.stderr
    for f in (j, c):
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f
    for d in (tmp_path / "new", tmp_path / "new" / "dir"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~umask, d


def _current_umask() -> int:
    um = os.umask(0)
    os.umask(um)
    return um


def test_trained_model_dir_honours_the_umask(tiny_model_dir):
    um = _current_umask()  # the fixture was trained in this process
    assert stat.S_IMODE(tiny_model_dir.stat().st_mode) == 0o777 & ~um
    files = [p for p in tiny_model_dir.iterdir() if p.is_file()]
    assert {"model.keras", "config.json", "labels.txt", "metrics.json"} <= {p.name for p in files}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~um, p


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_honour_the_umask_even_if_the_writer_replaces_the_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "a")
        with atomic_path(tmp_path / "b.bin") as tmp:  # a writer that writes via its own 0600 temp + rename
            fd, other = tempfile.mkstemp(dir=tmp_path)
            os.write(fd, b"b")
            os.close(fd)
            os.replace(other, tmp)
        work = make_temp_dir(tmp_path / "m")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(work.stat().st_mode) == 0o777 & ~umask and work.name.startswith(".m.partial-")


def test_atomic_path_errors_name_the_final_path_only_for_its_own_file(tmp_path):
    final = tmp_path / "out.json"
    with pytest.raises(OSError) as info:  # an error about the temporary file -> about the final path
        with atomic_path(final) as tmp:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(final)
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(FileNotFoundError) as info:  # an error about another file passes unchanged
        with atomic_path(final):
            open(tmp_path / "missing.txt")  # noqa: SIM115
    assert info.value.filename == str(tmp_path / "missing.txt")
    assert os.listdir(tmp_path) == []
    work = tmp_path / ".m.partial-1"
    with pytest.raises(PermissionError) as info:
        with reported_as(tmp_path / "m", work):
            raise PermissionError(errno.EACCES, "Permission denied", str(work / "sub" / "model.keras"))
    assert info.value.filename == str(tmp_path / "m" / "sub" / "model.keras")


def test_python_m_edgeclf_cli_runs():
    r = _run(["--version"])
    assert r.returncode == 0 and "edgeclf" in r.stdout, r.stderr


def test_user_errors_keeps_the_traceback_of_a_bug():
    import click
    from click.testing import CliRunner

    from edgeclf.cli._errors import user_errors
    from edgeclf.errors import ConfigError

    @click.command()
    @click.argument("kind")
    @user_errors
    def cmd(kind):
        if kind == "user":
            raise ConfigError("bad value for --x\nsecond line")
        if kind == "os":
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), "out/p.json")
        raise ValueError("an edgeclf bug")

    r = CliRunner().invoke(cmd, ["user"])
    assert r.exit_code == 1 and r.output == "Error: bad value for --x\n"
    r = CliRunner().invoke(cmd, ["os"])
    assert r.exit_code == 1 and r.output == "Error: out/p.json: Is a directory\n"
    r = CliRunner().invoke(cmd, ["bug"])  # not a user error: propagates with its traceback
    assert isinstance(r.exception, ValueError) and "Error:" not in r.output

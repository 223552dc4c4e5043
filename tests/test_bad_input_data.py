"""Bad input to ``edgeclf train``, ``export``, ``eval`` and ``bench``: data folders, model
directories, config.json, options (see tests/_bad_input.py for the contract every case asserts).

Every case fails before any training or conversion work, so they are fast; the one that needs a
trained model uses the session's tiny model directory (tests/conftest.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _bad_input import empty, no_temp_files, one_error, snapshot, with_hashes
from _runtime_fixtures import build_models
from conftest import write_image_folders

TRAIN = ["train", "--model", "cnn", "--width", "4", "--epochs", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """3 classes x (12 train + 4 test) synthetic images."""
    return write_image_folders(tmp_path_factory.mktemp("bad_data"), n_train=12, n_test=4)


def _train_fails(data_arg, tmpdir, out: Path, *names, extra=()):
    one_error([*TRAIN, "--data", data_arg, "--out", out, "--name", "m", *extra], *names)
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())  # no model dir, no checkpoint
    empty(tmpdir)


# -- data --------------------------------------------------------------------------------------------
def test_single_class_dataset_is_refused(data, tmpdir_env, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(data / "train" / "blobs", one / "blobs")
    _train_fails(one, tmpdir_env, tmp_path / "out", one, "only one class folder (blobs)", "at least 2 classes")


def test_single_class_train_test_layout_is_refused(data, tmpdir_env, tmp_path):
    d = tmp_path / "d"
    for split in ("train", "test"):
        shutil.copytree(data / split / "blobs", d / split / "blobs")
    _train_fails(d, tmpdir_env, tmp_path / "out", d / "train", "only one class folder")


def test_missing_data_directory(tmpdir_env, tmp_path):
    _train_fails(tmp_path / "nowhere", tmpdir_env, tmp_path / "out", tmp_path / "nowhere", "not a directory")


def test_data_directory_without_class_folders(tmpdir_env, tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"x")
    _train_fails(tmp_path / "flat", tmpdir_env, tmp_path / "out", tmp_path / "flat", "no class folders")


def test_class_folder_without_images(data, tmpdir_env, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(data / "train", d)
    shutil.rmtree(d / "vstripes")
    (d / "vstripes").mkdir()
    (d / "vstripes" / "notes.txt").write_text("no images here")
    _train_fails(d, tmpdir_env, tmp_path / "out", d / "vstripes", "has no images")


def test_test_split_with_other_classes(data, tmpdir_env, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(data, d)
    shutil.rmtree(d / "test" / "vstripes")
    _train_fails(d, tmpdir_env, tmp_path / "out", d / "test", "differ")


def test_mostly_corrupt_images(data, tmpdir_env, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(data / "train", d)
    for p in sorted(d.rglob("*.png"))[::2]:  # every second file is garbage
        p.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _train_fails(d, tmpdir_env, tmp_path / "out", d, "could not be decoded")


@pytest.mark.parametrize("extra, names", [(["--input-size", "big"], ["--input-size"]),
                                          (["--val-split", "0.95"], ["val_split"]),
                                          (["--weights", "imagenet"], ["--weights"])])
def test_bad_train_options(data, tmpdir_env, tmp_path, extra, names):
    _train_fails(data, tmpdir_env, tmp_path / "out", *names, extra=extra)


def test_resume_without_a_checkpoint(tmpdir_env, tmp_path):
    one_error(["train", "--resume", tmp_path / "m"], tmp_path / "m")
    empty(tmpdir_env)


# -- export and eval -----------------------------------------------------------------------------------
@pytest.fixture()
def trained(tiny_model_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def _export_fails(model: Path, tmpdir, *names, extra=(), code=None):
    before = snapshot(model) if model.is_dir() else None
    one_error(["export", model, "--formats", "tflite", "--quantize", "int8", *extra], *names, code=code)
    if before is not None:
        assert snapshot(model) == before  # nothing written, nothing half-written
    no_temp_files(model.parent)
    empty(tmpdir)


def test_export_data_with_other_classes_names_data_and_model(data, trained, tmpdir_env, tmp_path):
    two = tmp_path / "two"
    for split in ("train", "test"):
        for cls in ("blobs", "hstripes"):
            shutil.copytree(data / split / cls, two / split / cls)
    _export_fails(trained, tmpdir_env, two, "2 classes", trained / "model.keras", "3 output classes",
                  extra=["--data", two])


def test_export_relative_data_path_from_config_json(trained, tmpdir_env, tmp_path, monkeypatch):
    cfg = json.loads((trained / "config.json").read_text())
    cfg["data"]["source"] = "datasets/mine"
    (trained / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    _export_fails(trained, tmpdir_env, "datasets/mine", trained / "config.json", "relative path",
                  str(tmp_path / "elsewhere"), "--data")


def test_eval_relative_data_path_from_config_json(trained, tmpdir_env, tmp_path, monkeypatch):
    cfg = json.loads((trained / "config.json").read_text())
    cfg["data"]["source"] = "datasets/mine"
    (trained / "config.json").write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path)
    before = snapshot(trained)
    one_error(["eval", trained], "datasets/mine", trained / "config.json", "relative path")
    assert snapshot(trained) == before
    empty(tmpdir_env)


def test_export_not_a_model_directory(tmpdir_env, tmp_path):
    _export_fails(tmp_path / "nowhere", tmpdir_env, tmp_path / "nowhere", "not a directory")
    (tmp_path / "empty").mkdir()
    _export_fails(tmp_path / "empty", tmpdir_env, tmp_path / "empty" / "config.json", "not found")


def test_export_malformed_config_json(trained, tmpdir_env):
    (trained / "config.json").write_text('{"model": 3}')
    _export_fails(trained, tmpdir_env, trained / "config.json", "malformed")


def test_export_corrupt_model_keras(trained, tmpdir_env):
    (trained / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    _export_fails(trained, tmpdir_env, trained / "model.keras")


@pytest.mark.parametrize("extra, name", [(["--prune", "1.5"], "--prune"), (["--quantize", "int4"], "int4"),
                                         (["--formats", "tflite,pt"], "pt")])
def test_bad_export_options(trained, tmpdir_env, extra, name):
    one_error(["export", trained, *extra], name, code=2)
    empty(tmpdir_env)


# -- bench -------------------------------------------------------------------------------------------
@pytest.fixture()
def bench_model(tmp_path_factory, tmp_path) -> Path:
    models = build_models(tmp_path_factory)
    return with_hashes(Path(shutil.copytree(models.model_dir, tmp_path / "model")))


def _bench_fails(model, tmpdir, out: Path, *names, extra=()):
    one_error(["bench", model, "--out", out, "--quick", "--no-keras", "--no-baseline", "--data", "cifar10", *extra],
              *names)
    assert not out.exists()
    empty(tmpdir)


def test_bench_changed_artifact_is_refused(bench_model, tmpdir_env, tmp_path):
    f = bench_model / "model_fp32.onnx"
    f.write_bytes(f.read_bytes() + b"\x00")
    _bench_fails(bench_model, tmpdir_env, tmp_path / "results", f, "sha256", "--no-verify")


def test_bench_without_manifest(bench_model, tmpdir_env, tmp_path):
    (bench_model / "manifest.json").unlink()
    _bench_fails(bench_model, tmpdir_env, tmp_path / "results", bench_model / "manifest.json")


def test_bench_data_with_other_classes(bench_model, data, tmpdir_env, tmp_path):
    _bench_fails(bench_model, tmpdir_env, tmp_path / "results", data, "differ from the model's labels",
                 extra=["--data", data])

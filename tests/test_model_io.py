"""``edgeclf.models.io.load_keras_model``: the in-memory weights path loads the same model as tf_keras's
plain ``load_model`` (weights and predictions bit-identical) for a trained model and every registry
model, leaves tf_keras as it was, and a corrupt model.keras still raises ModelLoadError naming it."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeclf._keras import keras
from edgeclf.errors import ModelLoadError
from edgeclf.models import MODELS, ModelConfig, build_model
from edgeclf.models import io as model_io
from edgeclf.models.io import load_keras_model

saving_lib = keras.src.saving.saving_lib


def _pixels(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def _assert_same_model(got, want, x) -> None:
    assert [w.name for w in got.weights] == [w.name for w in want.weights]
    for a, b in zip(got.weights, want.weights, strict=True):
        assert np.array_equal(a.numpy(), b.numpy()), a.name
    assert np.array_equal(got.predict(x, verbose=0), want.predict(x, verbose=0))


def test_trained_model_loads_like_plain_load_model(tiny_model_dir, monkeypatch):
    """The session's trained model (model.keras with Adam slots) through load_keras_model and through
    keras.models.load_model: same weights, same predictions; the weights member went through memory."""
    reads = []
    real_open = model_io._MembersInMemory.open
    monkeypatch.setattr(model_io._MembersInMemory, "open",
                        lambda self, name, mode="r": reads.append(name) or real_open(self, name, mode))
    original = saving_lib.H5IOStore

    fast = load_keras_model(tiny_model_dir)

    assert reads == ["model.weights.h5"]
    assert saving_lib.H5IOStore is original  # the replacement is gone after the load
    plain = keras.models.load_model(tiny_model_dir / "model.keras", compile=False)
    x = _pixels((8, *fast.input_shape[1:]))
    _assert_same_model(fast, plain, x)
    assert fast.predict(x, verbose=0).std() > 0  # a real, non-constant model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registry_model_round_trips(name, tmp_path):
    """Each registry model (tiny config, nested bases and embedded preprocessing included), saved as
    edgeclf train saves it, loads with the original's weights and predictions."""
    model = build_model(ModelConfig(name=name, **MODELS[name].tiny), (32, 32, 3), 3)
    model.save(tmp_path / "model.keras")
    _assert_same_model(load_keras_model(tmp_path), model, _pixels((2, 32, 32, 3)))


def _rewrite_member(src: Path, dst: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info, data if info.filename == name else zin.read(info.filename))


@pytest.mark.parametrize("damage", ["garbage weights", "truncated weights", "not a zip"])
def test_corrupt_model_keras_raises_model_load_error_naming_it(damage, tiny_model_dir, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    path = d / "model.keras"
    if damage == "not a zip":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    else:
        weights = zipfile.ZipFile(tiny_model_dir / "model.keras").read("model.weights.h5")
        data = b"\x89HDF\r\n\x1a\n" + bytes(200) if damage == "garbage weights" else weights[: len(weights) // 2]
        _rewrite_member(tiny_model_dir / "model.keras", path, "model.weights.h5", data)
    original = saving_lib.H5IOStore

    with pytest.raises(ModelLoadError, match="not a loadable Keras model") as info:
        load_keras_model(d)

    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)
    assert saving_lib.H5IOStore is original


def test_missing_model_keras_is_file_not_found(tmp_path, tiny_model_dir):
    shutil.copy(tiny_model_dir / "labels.txt", tmp_path / "labels.txt")
    with pytest.raises(FileNotFoundError, match="model.keras: not found"):
        load_keras_model(tmp_path)

"""The streaming input pipeline (edgeclf.data.stream): same pixels as the in-memory path, corrupt
files counted against the threshold, --limit, the validation split, the on-disk cache, the automatic
choice, and a training run on the streaming path."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_image_folders

from edgeclf.data import DataConfig, Dataset, load_dataset, open_dataset, open_test_split
from edgeclf.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folders(tmp_path_factory.mktemp("streamdata"), n_train=20, n_test=6, seed=3)


def _collect(source, batch=16):
    from edgeclf.data.pipeline import indexed_batches

    xs, idx = zip(*[(np.asarray(x), np.asarray(i)) for x, i in indexed_batches(source, batch)])
    return np.concatenate(xs), np.concatenate(idx)


def test_stream_gives_the_in_memory_pixels_and_splits(folder):
    cfg = DataConfig(source=str(folder), val_split=0.2, seed=1, image_size=(24, 20))
    mem = load_dataset(cfg, progress=False)
    ds = open_dataset(DataConfig(**{**cfg.to_dict(), "image_size": (24, 20), "stream": True}))
    assert not isinstance(ds, Dataset) and ds.input_shape == mem.input_shape == (24, 20, 3)
    assert ds.class_names == mem.class_names and ds.test_split_name == mem.test_split_name
    for split, x_mem, y_mem in ((ds.train, mem.x_train, mem.y_train), (ds.val, mem.x_val, mem.y_val),
                                (ds.test, mem.x_test, mem.y_test)):
        x, i = _collect(split)
        assert len(split) == len(y_mem) and sorted(i.tolist()) == list(range(len(y_mem)))
        np.testing.assert_array_equal(split.labels, y_mem)  # same stratified split, same order
        np.testing.assert_array_equal(x, x_mem[i].astype(np.float32))  # the one preprocessing definition


def test_streamed_test_split_alone_matches_the_in_memory_one(folder):
    cfg = DataConfig(source=str(folder), val_split=0.2, seed=1, image_size=(24, 20))
    mem = load_dataset(cfg, progress=False)
    test, classes = open_test_split(DataConfig(**{**cfg.to_dict(), "image_size": (24, 20), "stream": True}))
    assert classes == mem.class_names and test.cache is None  # evaluation writes no tf.data cache
    x, i = _collect(test)
    np.testing.assert_array_equal(test.labels, mem.y_test)
    np.testing.assert_array_equal(x, mem.x_test[i].astype(np.float32))


def test_training_batches_are_shuffled_labelled_and_complete(folder):
    from edgeclf.data.pipeline import source_batches

    ds = open_dataset(DataConfig(source=str(folder), val_split=0.0, seed=0, stream=True))
    batches = source_batches(ds.train, 8, True, None, seed=5)
    epochs = [[np.asarray(y) for _, y in batches] for _ in range(2)]
    for ys in epochs:
        assert sorted(np.concatenate(ys).tolist()) == sorted(ds.train.labels.tolist())
    assert not np.array_equal(np.concatenate(epochs[0]), np.concatenate(epochs[1]))  # reshuffled each epoch
    assert not np.array_equal(np.concatenate(epochs[0]), ds.train.labels)


def test_training_batches_are_reproducible_with_the_seed(folder):
    """Same seed -> the same images in the same order, although decoding runs in parallel threads
    (tf.data map with deterministic=True); another seed -> another order."""
    from edgeclf.data.pipeline import source_batches

    ds = open_dataset(DataConfig(source=str(folder), val_split=0.0, seed=0, stream=True))

    def first_epoch(seed):
        return np.concatenate([np.asarray(x).reshape(len(x), -1)[:, :8]
                               for x, _ in source_batches(ds.train, 8, True, None, seed=seed)])

    runs = [first_epoch(5) for _ in range(3)]
    assert all(np.array_equal(runs[0], r) for r in runs[1:])
    assert not np.array_equal(runs[0], first_epoch(6))


def test_corrupt_files_are_skipped_counted_and_over_the_threshold_stop(tmp_path):
    root = write_image_folders(tmp_path / "d", n_train=10, n_test=4)
    for name in ("a.png", "b.jpg"):
        (root / "train" / "blobs" / name).write_bytes(b"not an image")
    (root / "train" / "hstripes" / "empty.png").write_bytes(b"")
    ok = open_dataset(DataConfig(source=str(root), val_split=0.0, stream=True, max_bad_fraction=0.5))
    x, i = _collect(ok.train)
    assert len(ok.train) == 33 and len(x) == 30
    assert len(ok.train.bad.indices) == 3
    assert {ok.train.files[k].name for k in ok.train.bad.indices} == {"a.png", "b.jpg", "empty.png"}
    ok.train.check()  # 3 of 33 <= 50 %: a warning, no error

    strict = open_dataset(DataConfig(source=str(root), val_split=0.0, stream=True, max_bad_fraction=0.05))
    _collect(strict.train)
    with pytest.raises(DataError, match=r"3 of 33 image files could not be decoded.*> max 5%"):
        strict.train.check()


def test_training_stops_on_too_many_corrupt_files(tmp_path, monkeypatch):
    from edgeclf.data import AugmentConfig
    from edgeclf.models import MODELS, ModelConfig
    from edgeclf.train import train
    from edgeclf.train.config import Optimizer, TrainConfig

    root = write_image_folders(tmp_path / "d", n_train=8, n_test=4)
    for k in range(4):
        (root / "train" / "vstripes" / f"bad{k}.png").write_bytes(b"\x89PNG broken")
    cfg = TrainConfig(model=ModelConfig(name="cnn", **MODELS["cnn"].tiny),
                      data=DataConfig(source=str(root), val_split=0.0, stream=True), augment=AugmentConfig(),
                      epochs=1, batch_size=4, optimizer=Optimizer.ADAM, lr=1e-3, name="bad", out=str(tmp_path / "o"))
    with pytest.raises(DataError, match="could not be decoded"):
        train(cfg, progress=False)
    assert not (tmp_path / "o" / "bad").exists()


def test_limit_and_val_split_on_the_streaming_path(folder):
    ds = open_dataset(DataConfig(source=str(folder), val_split=0.25, limit=24, seed=2, stream=True))
    assert len(ds.train) + len(ds.val) == 24
    assert len(ds.test) == 10  # max(10, limit // 5)
    assert np.bincount(ds.val.labels).tolist() == [2, 2, 2]  # stratified: a quarter of each class's 8
    assert not set(ds.train.files) & set(ds.val.files)


def test_cache_is_written_once_and_reused(folder, tmp_path):
    cfg = DataConfig(source=str(folder), val_split=0.0, seed=0, cache=str(tmp_path / "cache"))
    first = open_dataset(cfg)  # --cache implies streaming
    assert not isinstance(first, Dataset)
    x1, i1 = _collect(first.test)
    assert first.test.decoded == len(first.test)
    assert any(p.name.startswith("test-32x32x3-") for p in (tmp_path / "cache").iterdir())
    again = open_dataset(cfg)
    x2, i2 = _collect(again.test)
    assert again.test.decoded == 0  # read from the cache, nothing decoded
    np.testing.assert_array_equal(x1[np.argsort(i1)], x2[np.argsort(i2)])
    other = open_dataset(DataConfig(**{**cfg.to_dict(), "image_size": (16, 16)}))
    _collect(other.test)
    assert other.test.decoded == len(other.test)  # another size: another cache


def test_automatic_choice(folder, monkeypatch):
    import edgeclf.data as data

    monkeypatch.delenv(data.STREAM_ENV, raising=False)
    cfg = DataConfig(source=str(folder))
    assert isinstance(open_dataset(cfg, progress=False), Dataset)  # a few KB: in memory
    monkeypatch.setattr(data, "STREAM_THRESHOLD_BYTES", 1000)
    assert not isinstance(open_dataset(cfg), Dataset)  # over the threshold: streamed
    assert isinstance(open_dataset(DataConfig(source=str(folder), stream=False), progress=False), Dataset)
    monkeypatch.setattr(data, "STREAM_THRESHOLD_BYTES", 2 * 1024**3)
    monkeypatch.setenv(data.STREAM_ENV, "1")
    assert not isinstance(open_dataset(cfg), Dataset)
    monkeypatch.setenv(data.STREAM_ENV, "0")
    assert isinstance(open_dataset(cfg, progress=False), Dataset)
    assert not isinstance(open_dataset(DataConfig(source=str(folder), stream=True)), Dataset)  # the option wins
    monkeypatch.setenv(data.STREAM_ENV, "yes")
    with pytest.raises(ConfigError, match="EDGECLF_STREAM"):
        open_dataset(cfg)
    with pytest.raises(ConfigError, match="image folders"):
        open_dataset(DataConfig(source="cifar10", stream=True))
    with pytest.raises(ConfigError, match="streaming"):
        DataConfig(source=str(folder), stream=False, cache="x")


def test_train_on_the_streaming_path_with_class_weights(tiny_data_dir, tmp_path):
    from edgeclf._keras import keras
    from edgeclf.data import AugmentConfig
    from edgeclf.models import MODELS, ModelConfig
    from edgeclf.models.io import load_keras_model
    from edgeclf.train import train
    from edgeclf.train.config import ClassWeight, Optimizer, TrainConfig

    cfg = TrainConfig(model=ModelConfig(name="cnn", **MODELS["cnn"].tiny),
                      data=DataConfig(source=str(tiny_data_dir), val_split=0.1, seed=0, stream=True,
                                      cache=str(tmp_path / "cache")),
                      augment=AugmentConfig(flip=True, translate_px=2), epochs=3, batch_size=32,
                      optimizer=Optimizer.ADAM, lr=3e-3, weight_decay=0.0, label_smoothing=0.0,
                      class_weight=ClassWeight.BALANCED, name="st", out=str(tmp_path / "o"), seed=0)
    steps = []  # optimizer.iterations after each epoch (tf_keras counts one too many in the first
    # epoch of an unknown-cardinality dataset; edgeclf.train.fit.ExactStepCount corrects it)
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: steps.append(int(record.model.optimizer.iterations)))
    result = train(cfg, progress=False, extra_callbacks=[record])
    m = result.metrics
    assert m["n_train"] == 324 and m["n_val"] == 36 and m["n_test"] == 90
    assert steps == [11, 22, 33]  # ceil(324 / 32) = 11 steps per epoch: the schedule sees the true count
    assert m["top1_acc"] > 0.5  # learned the textures (chance: 1/3)
    assert load_keras_model(result.model_dir).input_shape == (None, 32, 32, 3)

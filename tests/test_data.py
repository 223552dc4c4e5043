"""edgeclf.data: image-folder loaders, splits, class weights, Fashion-MNIST IDX, the tf.data pipeline."""

from __future__ import annotations

import gzip
import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY_CLASSES, synthetic_image, write_image_folders

from edgeclf.data import (
    AugmentConfig,
    DataConfig,
    DataError,
    Dataset,
    balanced_class_weights,
    load_dataset,
    native_size,
    open_test_split,
)
from edgeclf.data.builtin import FASHION_MNIST_IDX_DIR, load_fashion_mnist_idx, read_idx
from edgeclf.data.dataset import representative_images, stratified_split, stratified_subset


def _write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


def _one_tree(root: Path, counts: dict[str, int], size: int = 32, seed: int = 0) -> Path:
    """``root/<class>/*.png`` with ``counts[class]`` synthetic images each (one-tree layout)."""
    rng = np.random.default_rng(seed)
    for cls, n in counts.items():
        for i in range(n):
            _write(root / cls / f"{i:04d}.png", synthetic_image(cls, rng, size))
    return root


def _load(root: Path, **kw) -> Dataset:
    return load_dataset(DataConfig(source=str(root), **kw), progress=False)


def _n_images(ds: Dataset) -> int:
    return len(ds.x_train) + len(ds.x_val) + len(ds.x_test)


# ---------------------------------------------------------------- image folders


def test_train_test_layout(tmp_path):
    root = write_image_folders(tmp_path / "d", n_train=20, n_test=5)
    ds = _load(root, val_split=0.2, seed=1)
    assert ds.class_names == list(TINY_CLASSES)
    assert ds.test_split_name == "test" and ds.name == "d"
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (48, 12, 15)
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape[1:] == (32, 32, 3) and ds.input_shape == (32, 32, 3)
    assert ds.y_train.dtype == np.int32
    # the validation split is stratified: 4 of every class's 20 training images
    assert np.bincount(ds.y_val).tolist() == [4, 4, 4]
    assert np.bincount(ds.y_test).tolist() == [5, 5, 5]
    # pixels are the decoded files (RGB order), not something else
    first = cv2.cvtColor(cv2.imread(str(root / "test" / "blobs" / "0000.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(ds.x_test[0], first)


def test_val_folder_is_used_as_test_split(tmp_path):
    root = write_image_folders(tmp_path / "d", n_train=10, n_test=4)
    (root / "test").rename(root / "val")
    ds = _load(root, val_split=0.1)
    assert ds.test_split_name == "val" and len(ds.x_test) == 12


def test_one_tree_layout_holds_out_test_and_val(tmp_path):
    root = _one_tree(tmp_path / "flat", {c: 30 for c in TINY_CLASSES})
    ds = _load(root, val_split=0.2, seed=3)
    assert ds.test_split_name == "held-out"
    assert _n_images(ds) == 90
    # test: 20 % of each class (val_split, at least 10 %); val: 20 % of the rest
    assert np.bincount(ds.y_test).tolist() == [6, 6, 6]
    assert np.bincount(ds.y_val).tolist() == [5, 5, 5]
    # no image is in two splits
    flat = np.concatenate([ds.x_train, ds.x_val, ds.x_test]).reshape(90, -1)
    assert len(np.unique(flat, axis=0)) == 90
    # val_split 0 still holds out a 10 % test split, and no validation split
    ds0 = _load(root, val_split=0.0)
    assert len(ds0.x_val) == 0 and np.bincount(ds0.y_test).tolist() == [3, 3, 3]


@pytest.mark.parametrize("layout", ["test-folder", "held-out"])
def test_open_test_split_is_the_dataset_test_split(tmp_path, layout):
    if layout == "test-folder":
        root = write_image_folders(tmp_path / "d", n_train=20, n_test=7)
    else:
        root = _one_tree(tmp_path / "flat", {c: 30 for c in TINY_CLASSES})
    for kw in ({}, {"limit": 45, "seed": 5}):
        cfg = DataConfig(source=str(root), val_split=0.2, **kw)
        ds = load_dataset(cfg, progress=False)
        test, classes = open_test_split(cfg, progress=False)
        assert classes == ds.class_names
        np.testing.assert_array_equal(test.labels, ds.y_test)  # same images, same order
        np.testing.assert_array_equal(test.x, ds.x_test)
    assert len(test) == len(ds.y_test) > 0
    # a stratified subset, chosen before decoding, is the full split's subset (bench --test-samples)
    sub, _ = open_test_split(cfg, progress=False, samples=6, sample_seed=2)
    x6, y6 = ds.test.sample(6, 2)
    assert len(sub) == 6 and len(set(sub.labels.tolist())) == 3
    np.testing.assert_array_equal(sub.labels, y6)
    np.testing.assert_array_equal(sub.x, x6)


def test_open_test_split_never_decodes_the_training_images(tmp_path):
    root = write_image_folders(tmp_path / "d", n_train=6, n_test=4)
    for f in (root / "train").rglob("*.png"):
        f.write_bytes(b"not an image")
    cfg = DataConfig(source=str(root), val_split=0.0, image_size=(32, 32))
    with pytest.raises(DataError, match=str(root / "train")):
        load_dataset(cfg, progress=False)  # the whole dataset needs the training images
    test, classes = open_test_split(cfg, progress=False)
    assert classes == list(TINY_CLASSES) and np.bincount(test.labels).tolist() == [4, 4, 4]
    first = cv2.cvtColor(cv2.imread(str(root / "test" / "blobs" / "0000.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(test.x[0], first)


def test_test_split_with_other_classes_is_refused(tmp_path):
    root = write_image_folders(tmp_path / "d", n_train=4, n_test=2)
    (root / "test" / "vstripes").rename(root / "test" / "diagonal")
    with pytest.raises(DataError, match="differ"):
        _load(root)


def test_corrupt_file_is_skipped_with_a_warning(tmp_path, caplog):
    root = write_image_folders(tmp_path / "d", n_train=20, n_test=5)
    bad = root / "train" / "hstripes" / "broken.jpg"
    bad.write_bytes(b"this is not a JPEG at all" * 10)
    with caplog.at_level(logging.WARNING, logger="edgeclf"):
        ds = _load(root, val_split=0.0, max_bad_fraction=0.05)  # 1 of 61 = 1.6 %
    assert len(ds.x_train) == 60 and np.bincount(ds.y_train).tolist() == [20, 20, 20]
    text = caplog.text
    assert "broken.jpg" in text
    assert "1 of 61 image files could not be decoded" in text


def test_too_many_corrupt_files_abort_naming_the_directory(tmp_path):
    root = write_image_folders(tmp_path / "d", n_train=10, n_test=5)
    for i in range(3):  # 3 of 33 = 9 % > 5 %
        (root / "train" / "blobs" / f"bad{i}.jpg").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError) as err:
        _load(root, max_bad_fraction=0.05)
    msg = str(err.value)
    assert str(root / "train") in msg and "3 of 33" in msg
    # the same files are accepted with a higher threshold
    ds = _load(root, max_bad_fraction=0.1, val_split=0.0)
    assert len(ds.x_train) == 30


def test_corrupt_test_file_is_attributed_to_the_test_directory(tmp_path):
    root = write_image_folders(tmp_path / "d", n_train=5, n_test=2)
    (root / "test" / "blobs" / "x.png").write_bytes(b"nope")
    with pytest.raises(DataError, match=str(root / "test")):
        _load(root, max_bad_fraction=0.05)


def test_empty_class_folder_names_the_folder(tmp_path):
    root = write_image_folders(tmp_path / "d", n_train=5, n_test=2)
    empty = root / "train" / "zebra"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataError) as err:
        _load(root)
    assert str(empty) in str(err.value) and "no images" in str(err.value)


def test_non_image_files_are_ignored(tmp_path):
    root = write_image_folders(tmp_path / "d", n_train=6, n_test=2)
    (root / "train" / "blobs" / "notes.txt").write_text("taken on a sunny day")
    (root / "train" / "notes.txt").write_text("top-level notes")
    (root / "train" / ".cache").mkdir()  # hidden folders are not classes
    ds = _load(root, val_split=0.0)
    assert ds.class_names == list(TINY_CLASSES) and len(ds.x_train) == 18


def test_mixed_sizes_are_resized_to_the_most_common_size(tmp_path, caplog):
    rng = np.random.default_rng(0)
    root = _one_tree(tmp_path / "mixed", {c: 8 for c in TINY_CLASSES}, size=32)
    _write(root / "blobs" / "big.png", synthetic_image("blobs", rng, 64))
    _write(root / "hstripes" / "odd.png", cv2.resize(synthetic_image("hstripes", rng, 32), (40, 24)))
    with caplog.at_level(logging.WARNING, logger="edgeclf"):
        ds = _load(root, val_split=0.0)
    assert ds.input_shape == (32, 32, 3) and _n_images(ds) == 26
    # the two odd images may land in train or in the held-out test split: one warning per split
    assert sum(int(n) for n in re.findall(r"(\d+) images were not 32x32", caplog.text)) == 2
    # a declared size wins over the probed one, for every split
    ds = _load(root, val_split=0.2, image_size=(24, 20))
    for x in (ds.x_train, ds.x_val, ds.x_test):
        assert x.shape[1:] == (24, 20, 3) and x.dtype == np.uint8


@pytest.mark.parametrize("shape,interp", [
    ((64, 48, 3), cv2.INTER_AREA),     # shrinking both sides
    ((16, 20, 3), cv2.INTER_LINEAR),   # enlarging
    ((64, 20, 3), cv2.INTER_LINEAR),   # one side enlarged
    ((50, 40, 1), cv2.INTER_AREA),     # grey keeps its channel axis
])
def test_resize_image_is_the_one_rule(shape, interp):
    from edgeclf.preprocess import resize_image

    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    got = resize_image(img, 32, 24)
    want = cv2.resize(img, (24, 32), interpolation=interp).reshape(32, 24, shape[2])
    assert got.shape == (32, 24, shape[2]) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    assert resize_image(got, 32, 24) is got


def test_folder_images_are_resized_like_the_runtime(tmp_path):
    from edgeclf.data.folders import load_images
    from edgeclf.preprocess import load_image, to_model_input

    rng = np.random.default_rng(1)
    files = [_write(tmp_path / "a" / "big.png", synthetic_image("blobs", rng, 64)),
             _write(tmp_path / "a" / "small.png", cv2.resize(synthetic_image("hstripes", rng, 32), (20, 24)))]
    x, _ = load_images(files, np.zeros(2, np.int32), (32, 32), 3, 0.0, "t", progress=False)
    for img, f in zip(x, files):
        np.testing.assert_array_equal(img, to_model_input(load_image(f), 32, 32).astype(np.uint8))


def test_interrupted_decoding_cancels_the_files_not_yet_decoded(monkeypatch):
    """Ctrl-C / SIGTERM in the main thread while a folder decodes: load_images stops without decoding
    the rest of the files (a ``with ThreadPoolExecutor`` block decoded all of them first: 8.3 s after a
    SIGTERM 1 s into CIFAR-10's JPEG folders, against 1.0 s with the pending files cancelled, measured
    2026-12-04 on the Zen 4)."""
    import threading
    import time

    import tqdm.auto

    from edgeclf.data import folders

    decoded, lock = [], threading.Lock()

    def slow_decode(path, size, channels):
        # 10 ms a file: the workers run at most a few files ahead of the main thread, even if a loaded CI
        # machine stalls it for 100-200 ms (the old `with` block took 3000 x 10 ms / 4 threads = 7.5 s)
        time.sleep(0.01)
        with lock:
            decoded.append(path)
        return np.zeros((*size, channels), np.uint8), False

    def interrupted_after_20(iterable, **kw):  # the progress bar's loop, where the main thread's signal lands
        for n, item in enumerate(iterable):
            if n == 20:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(folders, "_decode", slow_decode)
    monkeypatch.setattr(tqdm.auto, "tqdm", interrupted_after_20)
    files = [Path(f"img{i}.jpg") for i in range(3000)]
    with pytest.raises(KeyboardInterrupt):
        folders.load_images(files, np.zeros(3000, np.int32), (8, 8), 3, 0.0, "t", progress=False)
    time.sleep(0.2)  # the pool's threads finish the files they hold, and take no new ones
    assert len(decoded) < 200


def test_grey_channels(tmp_path):
    root = write_image_folders(tmp_path / "d", n_train=4, n_test=2)
    ds = load_dataset(DataConfig(source=str(root), val_split=0.0), channels=1, progress=False)
    assert ds.input_shape == (32, 32, 1)
    rgb = cv2.cvtColor(cv2.imread(str(root / "train" / "blobs" / "0000.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(ds.x_train[0, :, :, 0], cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        _load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        _load(tmp_path / "empty")
    (tmp_path / "only_train" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=str(tmp_path / "only_train" / "train")):
        _load(tmp_path / "only_train")


def test_native_size_of_folders_and_builtins(tmp_path):
    assert native_size(DataConfig(source="cifar10")) == (32, 32)
    assert native_size(DataConfig(source="fashion_mnist")) == (28, 28)
    rng = np.random.default_rng(0)
    # the most common size among the training images (the test split is not looked at)
    for i, (h, w) in enumerate([(40, 60), (40, 60), (50, 50)]):
        _write(tmp_path / "d" / "train" / "blobs" / f"{i}.png", cv2.resize(synthetic_image("blobs", rng), (w, h)))
    _write(tmp_path / "d" / "train" / "hstripes" / "0.png", cv2.resize(synthetic_image("hstripes", rng), (60, 40)))
    for cls in ("blobs", "hstripes"):
        _write(tmp_path / "d" / "test" / cls / "0.png", synthetic_image(cls, rng, 90))
    assert native_size(DataConfig(source=str(tmp_path / "d"))) == (40, 60)
    assert load_dataset(DataConfig(source=str(tmp_path / "d"), val_split=0.0), progress=False).input_shape == (40, 60, 3)
    with pytest.raises(DataError, match="not a directory"):
        native_size(DataConfig(source=str(tmp_path / "nope")))


def test_limit_is_a_stratified_subset_keeping_every_class(tmp_path):
    # class-sorted folder, one rare class: the first N files would miss classes
    root = _one_tree(tmp_path / "imb", {"blobs": 60, "hstripes": 5, "vstripes": 40})
    ds = _load(root, val_split=0.0, limit=20, seed=0)
    counts = np.bincount(ds.y_train, minlength=3)
    assert len(ds.x_train) == 20 and (counts > 0).all()
    # each class keeps about its share (of the 94 images left after the held-out test split)
    assert counts[0] > counts[2] > counts[1]
    assert len(ds.x_test) == 10 and set(ds.y_test.tolist()) == {0, 1, 2}


def test_stratified_subset_real_imbalance():
    # the seed dataset case: 14 of 1909 images in one class
    labels = np.repeat([0, 1, 2, 3], [14, 600, 645, 650])
    idx = stratified_subset(labels, 200, seed=0)
    assert len(idx) == 200 and len(np.unique(idx)) == 200 and (np.diff(idx) > 0).all()
    counts = np.bincount(labels[idx], minlength=4)
    assert counts[0] >= 1 and (counts > 0).all()
    np.testing.assert_allclose(counts / 200, np.bincount(labels) / len(labels), atol=0.01)
    # asking for more than there is returns everything
    assert len(stratified_subset(labels, 5000, seed=0)) == len(labels)
    # deterministic in the seed
    np.testing.assert_array_equal(idx, stratified_subset(labels, 200, seed=0))
    assert not np.array_equal(idx, stratified_subset(labels, 200, seed=1))


def test_stratified_split_holds_out_a_fraction_of_every_class():
    labels = np.repeat([0, 1, 2], [50, 10, 1])
    keep, held = stratified_split(labels, 0.2, seed=0)
    assert np.bincount(labels[held], minlength=3).tolist() == [10, 2, 0]  # a single image is never held out
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(61))
    keep, held = stratified_split(labels, 0.0, seed=0)
    assert len(held) == 0 and len(keep) == 61


def test_balanced_class_weights_match_sklearn_formula():
    # 14 of 1909 images in one class (the real case from a seed dataset)
    labels = np.repeat([0, 1, 2], [14, 947, 948])
    w = balanced_class_weights(labels, 3)
    n, k = 1909, 3
    assert w[0] == pytest.approx(n / (k * 14)) and w[0] == pytest.approx(45.452, abs=1e-3)
    assert w[1] == pytest.approx(n / (k * 947)) and w[2] == pytest.approx(n / (k * 948))
    # every class then carries the same total weight n / k
    for c, cnt in enumerate((14, 947, 948)):
        assert w[c] * cnt == pytest.approx(n / k)
    # a class absent from the labels gets weight 0, the others keep the formula with 4 classes
    w4 = balanced_class_weights(labels, 4)
    assert w4[3] == 0.0 and w4[0] == pytest.approx(n / (4 * 14))


def test_representative_images_come_from_train_and_are_model_inputs():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    y = np.repeat([0, 1], 20)
    rep = representative_images(x, y, 10, seed=0)
    assert rep.shape == (10, 8, 8, 3) and rep.dtype == np.float32
    rows = {r.tobytes() for r in x.astype(np.float32)}
    assert all(r.tobytes() in rows for r in rep)


def test_data_config_validation():
    with pytest.raises(ValueError, match="val_split"):
        DataConfig(val_split=2)
    with pytest.raises(ValueError, match="limit"):
        DataConfig(limit=3)
    with pytest.raises(ValueError, match="image_size"):
        DataConfig(image_size=(4, 4))
    cfg = DataConfig(source="x", image_size=(24, 32), limit=100)
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="zoom"):
        AugmentConfig(zoom=1.0)


# ---------------------------------------------------------------- Fashion-MNIST IDX


def _idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def _write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    data = _idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def test_read_idx_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    np.testing.assert_array_equal(read_idx(_write_idx(tmp_path / "imgs", imgs)), imgs)
    np.testing.assert_array_equal(read_idx(_write_idx(tmp_path / "labels", labels, gz=False)), labels)


def test_read_idx_rejects_bad_files(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "missing.gz")
    bad_magic = tmp_path / "float.idx"
    bad_magic.write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\x00" * 4)
    with pytest.raises(DataError, match="not an unsigned-byte IDX"):
        read_idx(bad_magic)
    short = tmp_path / "short.idx"
    short.write_bytes(_idx_bytes(np.zeros((3, 4, 4)))[:-5])
    with pytest.raises(DataError, match=r"header says \[3, 4, 4\]"):
        read_idx(short)
    header_only = tmp_path / "header.idx"
    header_only.write_bytes(bytes([0, 0, 0x08, 3, 0, 0]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(header_only)
    cut = tmp_path / "cut.gz"
    noise = np.random.default_rng(0).integers(0, 256, (50, 28, 28))
    cut.write_bytes(gzip.compress(_idx_bytes(noise))[:100])
    with pytest.raises(DataError, match=str(cut)):
        read_idx(cut)


def test_load_fashion_mnist_idx_on_generated_files(tmp_path):
    rng = np.random.default_rng(0)
    xtr, ytr = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), rng.integers(0, 10, 12)
    xte, yte = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), rng.integers(0, 10, 5)
    _write_idx(tmp_path / "train-images-idx3-ubyte", xtr)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", ytr)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", xte, gz=False)  # un-gzipped copies work too
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", yte)
    a, b, c, d = load_fashion_mnist_idx(tmp_path)
    assert a.shape == (12, 28, 28, 1) and a.dtype == np.uint8 and c.shape == (5, 28, 28, 1)
    assert b.dtype == np.int32 and d.dtype == np.int32
    np.testing.assert_array_equal(a[..., 0], xtr)
    np.testing.assert_array_equal(d, yte)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_fashion_mnist_idx(tmp_path)


@pytest.mark.skipif(not FASHION_MNIST_IDX_DIR.is_dir(),
                    reason=f"{FASHION_MNIST_IDX_DIR} missing (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_idx():
    xtr, ytr, xte, yte = load_fashion_mnist_idx(FASHION_MNIST_IDX_DIR)
    assert xtr.shape == (60000, 28, 28, 1) and xtr.dtype == np.uint8
    assert xte.shape == (10000, 28, 28, 1)
    assert np.bincount(ytr).tolist() == [6000] * 10 and np.bincount(yte).tolist() == [1000] * 10
    assert 50 < xtr.mean() < 100  # real pictures, not zeros


# ---------------------------------------------------------------- tf.data pipeline


def _batches(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(np.asarray(a), np.asarray(b)) for a, b in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_pipeline_shapes_and_dtypes():
    from edgeclf.data.pipeline import make_dataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 16, 12, 3), dtype=np.uint8)
    y = np.arange(10, dtype=np.int32) % 3
    batches = list(make_dataset(x, y, batch_size=4, training=False))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    a, b = batches[0]
    assert a.dtype.name == "float32" and tuple(a.shape) == (4, 16, 12, 3) and b.dtype.name == "int32"
    xs, ys = _batches(batches)
    np.testing.assert_array_equal(xs, x.astype(np.float32))  # evaluation: same order, no change
    np.testing.assert_array_equal(ys, y)
    # training shuffles but keeps every (image, label) pair
    xs, ys = _batches(make_dataset(x, y, batch_size=4, training=True, augment=None, seed=1))
    order = [int(np.flatnonzero((x.reshape(10, -1) == row).all(axis=1))[0]) for row in xs.reshape(10, -1)]
    assert sorted(order) == list(range(10)) and order != list(range(10))
    np.testing.assert_array_equal(ys, y[order])


@pytest.mark.parametrize("aug", [AugmentConfig(flip=True, translate_px=4),
                                 AugmentConfig(flip=False, translate_px=0, rotate_deg=20, zoom=0.2)])
def test_augmentation_changes_images_but_keeps_range_and_shape(aug):
    from edgeclf.data.pipeline import make_dataset

    rng = np.random.default_rng(0)
    x = np.stack([synthetic_image(TINY_CLASSES[i % 3], rng) for i in range(32)])
    y = np.zeros(32, dtype=np.int32)
    ds = make_dataset(x, y, batch_size=32, training=True, augment=aug, seed=0)
    out = np.asarray(next(iter(ds))[0])
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    # outputs come shuffled: count those equal to no source image
    changed = sum(not any(np.array_equal(o, s) for s in x.astype(np.float32)) for o in out)
    assert changed >= 16
    # training=False never augments
    plain = np.asarray(next(iter(make_dataset(x, y, 32, training=False, augment=aug)))[0])
    np.testing.assert_array_equal(plain, x.astype(np.float32))


def test_translate_shifts_by_whole_pixels_without_blurring():
    """--translate moves each image by a whole number of pixels (reflecting at the border), as
    pad-and-crop does: the central rows/columns of the output equal the input shifted by some
    integer (dy, dx) with |dy|, |dx| <= translate_px, and no pixel value is new (no interpolation)."""
    from edgeclf.data.pipeline import make_dataset

    t = 4
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(32, 32, 32, 3), dtype=np.uint8)  # noise: any blur would show
    aug = AugmentConfig(flip=False, translate_px=t)
    out, index = (np.asarray(a) for a in next(iter(make_dataset(x, np.arange(32, dtype=np.int32), 32, True, aug))))
    shifted = 0
    for img, i in zip(out, index):
        src = x[i].astype(np.float32)
        assert set(np.unique(img)) <= set(np.unique(src))
        inner = img[t:-t, t:-t]
        matches = [(dy, dx) for dy in range(-t, t + 1) for dx in range(-t, t + 1)
                   if np.array_equal(inner, src[t - dy:32 - t - dy, t - dx:32 - t - dx])]
        assert len(matches) == 1, f"image {i} is not a whole-pixel shift of its source"
        shifted += matches[0] != (0, 0)
    assert shifted >= 24  # (0, 0) is drawn ~1/81 of the time per image


def test_subpixel_translate_of_older_configs_resamples():
    """A config.json from before whole-pixel shifts (no ``translate_subpixel``) reads as the bilinear,
    fractional shift it trained with, which creates pixel values the source image does not have."""
    from dataclasses import asdict

    from edgeclf.data.pipeline import make_dataset

    assert AugmentConfig.from_dict(asdict(AugmentConfig())) == AugmentConfig()
    old = {k: v for k, v in asdict(AugmentConfig(flip=False)).items() if k != "translate_subpixel"}
    aug = AugmentConfig.from_dict(old)
    assert aug.translate_subpixel and not AugmentConfig().translate_subpixel
    x = np.random.default_rng(2).integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    out = np.asarray(next(iter(make_dataset(x, np.zeros(16, np.int32), 16, True, aug)))[0])
    assert len(set(np.unique(out)) - set(np.unique(x.astype(np.float32)))) > 100


def test_cutout_zeros_one_square():
    from edgeclf.data.pipeline import make_dataset

    size = 6
    x = np.full((64, 32, 32, 3), 200, dtype=np.uint8)
    aug = AugmentConfig(flip=False, translate_px=0, cutout_px=size)
    out = np.asarray(next(iter(make_dataset(x, np.zeros(64, np.int32), 64, True, aug, seed=0)))[0])
    assert set(np.unique(out).tolist()) <= {0.0, 200.0}
    full_squares = 0
    for img in out:
        zero = (img == 0).all(axis=2)
        assert ((img == 0).any(axis=2) == zero).all()  # all channels erased together
        rows, cols = np.flatnonzero(zero.any(axis=1)), np.flatnonzero(zero.any(axis=0))
        assert len(rows) and len(cols)
        # one axis-aligned rectangle, at most size x size (clipped only at the border)
        assert zero.sum() == len(rows) * len(cols)
        assert np.ptp(rows) == len(rows) - 1 and np.ptp(cols) == len(cols) - 1
        assert len(rows) <= size and len(cols) <= size
        if len(rows) < size:
            assert rows[0] == 0 or rows[-1] == 31
        if len(cols) < size:
            assert cols[0] == 0 or cols[-1] == 31
        full_squares += zero.sum() == size * size
    assert full_squares >= 24  # most centres are away from the border (expected ~45 of 64)


def test_write_samples_writes_decodable_labelled_pngs(tmp_path):
    from edgeclf.data.samples import write_samples
    from edgeclf.preprocess import load_image

    root = write_image_folders(tmp_path / "d", n_train=4, n_test=3)
    n = write_samples(str(root), tmp_path / "out", per_class=2)
    files = sorted((tmp_path / "out").rglob("*.png"))
    assert n == 6 and len(files) == 6 and {f.parent.name for f in files} == set(TINY_CLASSES)
    assert load_image(files[0]).shape == (32, 32, 3)
    assert not list((tmp_path / "out").rglob(".*"))  # no temporary files left
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        write_samples(str(root), tmp_path / "file" / "out", per_class=1)

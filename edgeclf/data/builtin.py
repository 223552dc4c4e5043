"""Built-in datasets: CIFAR-10 and Fashion-MNIST, through the Keras loaders or local copies."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np

from edgeclf.data.folders import DataError

log = logging.getLogger(__name__)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_MNIST_CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle_boot"]
# Debian's dataset-fashion-mnist package installs the original IDX files here.
FASHION_MNIST_IDX_DIR = Path("/usr/share/datasets/fashion-mnist")

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def load_cifar10() -> Arrays:
    """CIFAR-10 (Krizhevsky 2009) via ``keras.datasets.cifar10`` (downloads on first use).

    Returns:
        x_train uint8 (50000, 32, 32, 3) RGB, y_train int32 (50000,), x_test (10000, ...), y_test.

    Raises:
        DataError: the download failed (e.g. offline); the message says how to use a local copy.
    """
    from edgeclf._keras import keras

    try:
        (xtr, ytr), (xte, yte) = keras.datasets.cifar10.load_data()
    except Exception as exc:  # network errors come in many types
        raise DataError(
            f"cifar10: the Keras download failed ({type(exc).__name__}: {exc}); offline, pass a local copy "
            "as --data DIR with DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg"
        ) from None
    return xtr, ytr.reshape(-1).astype(np.int32), xte, yte.reshape(-1).astype(np.int32)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format, optionally gzipped) into a uint8 array.

    Raises:
        DataError: the file is missing or not an unsigned-byte IDX file.
    """
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:  # EOFError: truncated gzip stream
        raise DataError(f"{path}: cannot read IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: IDX header truncated ({len(data)} bytes)")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"{path}: IDX header says {dims} but holds {arr.size} values")
    return arr.reshape(dims)


def _find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: {stem}[.gz] not found")


def load_fashion_mnist_idx(root: Path = FASHION_MNIST_IDX_DIR) -> Arrays:
    """Fashion-MNIST (Xiao et al. 2017) from the original IDX files in ``root``.

    Returns:
        x_train uint8 (60000, 28, 28, 1) grey, y_train int32, x_test (10000, 28, 28, 1), y_test.
    """
    xtr = read_idx(_find_idx(root, "train-images-idx3-ubyte"))[..., None]
    ytr = read_idx(_find_idx(root, "train-labels-idx1-ubyte")).astype(np.int32)
    xte = read_idx(_find_idx(root, "t10k-images-idx3-ubyte"))[..., None]
    yte = read_idx(_find_idx(root, "t10k-labels-idx1-ubyte")).astype(np.int32)
    return xtr, ytr, xte, yte


def load_fashion_mnist() -> Arrays:
    """Fashion-MNIST via ``keras.datasets.fashion_mnist`` when reachable, else Debian's IDX files.

    Raises:
        DataError: neither the Keras download nor ``/usr/share/datasets/fashion-mnist`` worked.
    """
    from edgeclf._keras import keras

    try:
        (xtr, ytr), (xte, yte) = keras.datasets.fashion_mnist.load_data()
        return xtr[..., None], ytr.astype(np.int32), xte[..., None], yte.astype(np.int32)
    except Exception as exc:  # network errors come in many types
        if FASHION_MNIST_IDX_DIR.is_dir():
            log.info("fashion_mnist: Keras download failed (%s); using %s", type(exc).__name__,
                     FASHION_MNIST_IDX_DIR)
            return load_fashion_mnist_idx(FASHION_MNIST_IDX_DIR)
        raise DataError(
            f"fashion_mnist: the Keras download failed ({type(exc).__name__}) and {FASHION_MNIST_IDX_DIR} "
            "does not exist (apt-get install dataset-fashion-mnist)"
        ) from None

"""Per-image top-1 predictions on the test set, kept as ``predictions.npz``: by ``edgeclf train`` (and
``edgeclf eval``) in the model directory, one row for the float model, and by ``edgeclf bench`` beside
bench.json, one row per bench row.

Accuracies alone cannot be compared between two runs: a paired test (McNemar 1947) needs to know
*which* images each model got right. The model directories that produced a result may not survive
(a new machine, a cleaned disk), so the predictions themselves are kept: for CIFAR-10's 10,000 test
images and a dozen rows, ~20 kB compressed. ``benchmarks/paired_eval.py`` reads them.

File layout (``numpy.savez_compressed``):

* ``labels``: (N,) true class indices of the test images, in the order they were evaluated;
* ``rows``: (R,) strings naming each row, ``"<format> | <precision> | <file>"`` as in bench.md
  (training writes the one row :data:`TRAIN_ROW`);
* ``predictions``: (R, N) predicted class index (argmax of the scores) of each row, same order;
  uint8 for up to 256 classes, else uint16.

Only rows whose accuracy was measured appear.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeclf._io import atomic_path
from edgeclf.errors import DataError

FILE = "predictions.npz"


def row_key(fmt: str, precision: str, file: str) -> str:
    """The name of one bench row in ``predictions.npz``: ``"<format> | <precision> | <file>"``."""
    return f"{fmt} | {precision} | {file}"


#: The row ``edgeclf train`` / ``edgeclf eval`` write: the float Keras model of the model directory.
TRAIN_ROW = row_key("keras", "fp32", "model.keras")


def write_predictions(path: str | Path, labels: np.ndarray, predictions: dict[str, np.ndarray]) -> Path:
    """Write ``labels`` (N,) and each row's predicted classes (N,) to ``path`` atomically.

    Raises:
        ValueError: a prediction array's length differs from ``labels``'.
        OSError: naming ``path`` (see :func:`edgeclf._io.atomic_path`).
    """
    labels = np.asarray(labels)
    names = list(predictions)
    top = max([int(labels.max(initial=0))] + [int(np.max(p, initial=0)) for p in predictions.values()])
    dtype = np.uint8 if top < 256 else np.uint16
    stacked = np.zeros((len(names), len(labels)), dtype=dtype)
    for i, name in enumerate(names):
        pred = np.asarray(predictions[name])
        if pred.shape != labels.shape:
            raise ValueError(f"{name}: {pred.shape[0]} predictions for {len(labels)} labels")
        stacked[i] = pred
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, labels=labels.astype(dtype), rows=np.asarray(names, dtype=str),
                            predictions=stacked)
    return Path(path)


def read_predictions(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a ``predictions.npz``: (labels (N,), {row name: predicted classes (N,)}).

    Raises:
        DataError: the file is missing, not an npz, or lacks ``labels``/``rows``/``predictions``.
    """
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file (edgeclf train writes predictions.npz into the model "
                        "directory, bench beside bench.json)")
    try:
        with np.load(path, allow_pickle=False) as z:
            labels, rows, preds = z["labels"], z["rows"], z["predictions"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a predictions file ({exc})") from exc
    if preds.shape != (len(rows), len(labels)):
        raise DataError(f"{path}: predictions are {preds.shape}, expected ({len(rows)}, {len(labels)})")
    return labels.astype(np.int64), {str(r): p.astype(np.int64) for r, p in zip(rows, preds)}

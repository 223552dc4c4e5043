"""Compare two trained models on the same test images (an A/B of a training change).

    python benchmarks/paired_eval.py A_DIR B_DIR                      # their predictions.npz (edgeclf train)
    python benchmarks/paired_eval.py A_DIR B_DIR --data ../shared/datasets/cifar10-jpg   # evaluate model.keras
    python benchmarks/paired_eval.py benchmarks/results/RUN_A/predictions.npz benchmarks/results/RUN_B/predictions.npz

A and B are model directories or ``predictions.npz`` files (:mod:`edgeclf.predictions`): the one
``edgeclf train`` writes into the model directory (since 2026-12-04, session 27) or the one ``edgeclf
bench`` keeps beside bench.json (no model needed, so runs whose model directories are gone can still
be paired). A model directory is read from its predictions.npz, or, with ``--data`` (or without that
file), its model.keras is evaluated on the test split of ``--data``. From an npz the row is chosen
with ``--row-a`` / ``--row-b``, a substring of its name (default: the float original, bench's
``keras tf.function`` row or training's ``keras | fp32`` row); both files must hold the same test
labels in the same order.

Prints each model's test top-1 and McNemar's exact test on the images where exactly one of them is
right (b: only A right, c: only B right; two-sided binomial test of b vs c with p = 0.5, McNemar
1947). A paired test sees far smaller differences than two separate accuracies' confidence intervals,
since both models get most images right or wrong together. Writes nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from edgeclf.errors import DataError  # noqa: E402
from edgeclf.predictions import FILE, TRAIN_ROW, read_predictions  # noqa: E402


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: P(X <= min(b, c)) doubled, X ~ Binomial(b + c, 1/2)."""
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n) if n else 1.0


#: The float original's row, in the order tried when no row is given: bench's, then training's.
FLOAT_ROWS = ("keras tf.function |", TRAIN_ROW)


def from_npz(path: str, row: str | None) -> tuple[str, np.ndarray, np.ndarray]:
    """(name, labels, predicted classes) of the one row of a predictions.npz whose name contains ``row``
    (None: the float original, the first of :data:`FLOAT_ROWS` that matches one row)."""
    try:
        labels, rows = read_predictions(path)
    except DataError as exc:
        sys.exit(f"Error: {exc}")
    for wanted in (row,) if row is not None else FLOAT_ROWS:
        hits = [name for name in rows if wanted in name]
        if len(hits) == 1:
            return f"{path} [{hits[0]}]", labels, rows[hits[0]]
    sys.exit(f"{path}: no single row matches {row or ' or '.join(FLOAT_ROWS)!r}; rows: {', '.join(rows)}")


def from_model_dir(path: str, data: str | None, cache: dict) -> tuple[str, np.ndarray, np.ndarray]:
    """(name, labels, predicted classes) of the Keras model in ``path`` on the test split of ``data``."""
    from edgeclf.data import DataConfig, load_dataset
    from edgeclf.models.io import load_keras_model
    from edgeclf.train.evaluate import predict_source

    if data is None:
        sys.exit(f"{path}: no predictions.npz in this model directory: give --data to evaluate its model.keras")
    if "test" not in cache:
        cache["test"] = load_dataset(DataConfig(source=data, val_split=0.0), progress=False).test
    probs, labels = predict_source(load_keras_model(path), cache["test"])
    return path, labels, probs.argmax(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="A: model directory or predictions.npz")
    ap.add_argument("b", help="B: model directory or predictions.npz")
    ap.add_argument("--data", help="evaluate model directories' model.keras on this dataset's test split "
                                   "(default: read their predictions.npz)")
    ap.add_argument("--row-a", help="row of A's predictions.npz (substring; default: the float original)")
    ap.add_argument("--row-b", help="row of B's predictions.npz (substring; default: the float original)")
    args = ap.parse_args()
    cache: dict = {}
    right, labels_of = [], []
    for path, row in ((args.a, args.row_a), (args.b, args.row_b)):
        if not path.endswith(".npz") and args.data is None and os.path.isfile(os.path.join(path, FILE)):
            path = os.path.join(path, FILE)
        name, labels, pred = from_npz(path, row) if path.endswith(".npz") else from_model_dir(path, args.data, cache)
        right.append(pred == labels)
        labels_of.append(labels)
        print(f"{name}: test top-1 {right[-1].mean():.4f} on {len(labels)} images")
    if not np.array_equal(labels_of[0], labels_of[1]):
        sys.exit("A and B were evaluated on different test labels (or in a different order): no paired test")
    a, b = right
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    p = mcnemar_exact_p(only_a, only_b)
    print(f"B - A: {100 * (b.mean() - a.mean()):+.2f} points; only A right {only_a}, only B right {only_b}, "
          f"McNemar exact p = {p:.3g}")


if __name__ == "__main__":
    main()

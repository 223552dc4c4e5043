"""Evaluate a float Keras model on the test split and write the metrics/plots of a model directory;
``evaluate_dir`` re-evaluates an existing model directory (``edgeclf eval``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeclf._io import write_json
from edgeclf.metrics import confusion_matrix, cross_entropy, per_class_report, top1_accuracy
from edgeclf.predictions import FILE as PREDICTIONS_FILE
from edgeclf.predictions import TRAIN_ROW, write_predictions


def predict_probs(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run ``model`` on uint8/float (N, H, W, C) images in [0, 255] -> float32 (N, C) probabilities."""
    out = [np.asarray(model(np.asarray(x[i:i + batch_size], dtype=np.float32), training=False))
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.output_shape[-1]), np.float32)


def predict_source(model, source, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over an image source (:mod:`edgeclf.data.dataset`, in memory or streamed).

    Returns:
        (float32 (M, C) probabilities, int32 (M,) labels) of the images that decoded (M <= len(source)).

    Raises:
        edgeclf.errors.DataError: too many of a streamed source's files failed to decode.
    """
    from edgeclf.data.pipeline import indexed_batches

    probs, idx = [], []
    for images, i in indexed_batches(source, batch_size):
        probs.append(np.asarray(model(images, training=False), dtype=np.float32))
        idx.append(np.asarray(i))
    source.check()
    if not probs:
        return np.zeros((0, model.output_shape[-1]), np.float32), np.zeros(0, np.int32)
    return np.concatenate(probs), np.asarray(source.labels)[np.concatenate(idx)]


def evaluate_source(model, source, class_names: list[str]) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """:func:`evaluate_model` on an image source (in memory or streamed from disk); ``n_test`` counts
    the images that decoded.

    Returns:
        (metrics as :func:`evaluate_model`'s, (int (M,) labels, int (M,) predicted classes) of the
        images that decoded, in evaluation order: what :func:`write_eval_artifacts` keeps as
        predictions.npz).
    """
    probs, y = predict_source(model, source)
    return _metrics(probs, y, class_names), (y, probs.argmax(axis=1))


def evaluate_model(model, x: np.ndarray, y: np.ndarray, class_names: list[str]) -> dict:
    """Top-1 accuracy, loss, per-class precision/recall/F1 and the confusion matrix on (x, y).

    Args:
        model: a Keras classifier, float32 (N, H, W, C) [0, 255] -> (N, C) probabilities.
        x: uint8 (N, H, W, C) images; y: int32 (N,) labels.

    Returns:
        dict with ``top1_acc``, ``loss`` (cross-entropy, nats), ``n_test``, ``per_class`` and
        ``confusion_matrix`` (list of lists, rows = true class).
    """
    return _metrics(predict_probs(model, x), y, class_names)


def _metrics(probs: np.ndarray, y: np.ndarray, class_names: list[str]) -> dict:
    cm = confusion_matrix(y, probs.argmax(axis=1), len(class_names))
    return {
        "top1_acc": round(top1_accuracy(probs, y), 4),
        "loss": round(cross_entropy(probs, y), 4),
        "n_test": len(y),
        "per_class": per_class_report(cm, class_names),
        "confusion_matrix": cm.tolist(),
    }


def write_eval_artifacts(model_dir: Path, metrics: dict, history: list[dict] | None,
                         predictions: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Write metrics.json, confusion_matrix.png, (with a history) curves.png and (with ``predictions``,
    (labels (N,), predicted classes (N,)) as :func:`evaluate_source` returns them) predictions.npz
    (:mod:`edgeclf.predictions`, row :data:`~edgeclf.predictions.TRAIN_ROW`) into ``model_dir``."""
    from edgeclf.train.plots import confusion_matrix_plot, training_curves

    write_json(model_dir / "metrics.json", metrics)
    if predictions is not None:
        labels, top1 = predictions
        write_predictions(model_dir / PREDICTIONS_FILE, labels, {TRAIN_ROW: top1})
    names = list(metrics["per_class"])
    confusion_matrix_plot(np.asarray(metrics["confusion_matrix"]), names, model_dir / "confusion_matrix.png",
                          title=f"test top-1 {metrics['top1_acc']:.2%} ({metrics['n_test']} images)")
    if history:
        training_curves(history, model_dir / "curves.png")


def evaluate_dir(model_dir: Path, data: str | None = None) -> dict:
    """Evaluate ``model_dir``'s model.keras on the test split of its config's data (or ``data``).

    Only the test split is decoded (:func:`edgeclf.data.open_test_split`). Rewrites metrics.json
    (keeping training facts), confusion_matrix.png and predictions.npz. Returns the metrics.

    Raises:
        FileNotFoundError / ValueError: not a model directory or a malformed one.
        edgeclf.errors.DataError: the data can't be loaded.
    """
    from edgeclf.data import open_test_split
    from edgeclf.models.io import load_keras_model
    from edgeclf.train.config import check_num_classes, load_config, saved_data_config

    cfg = load_config(model_dir)
    dcfg = saved_data_config(model_dir, cfg, data)
    model = load_keras_model(model_dir)
    test, class_names = open_test_split(dcfg, channels=int(model.input_shape[-1]))
    check_num_classes(Path(model_dir) / "model.keras", int(model.output_shape[-1]), dcfg.source, class_names)
    metrics_path = Path(model_dir) / "metrics.json"
    old = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics, predictions = evaluate_source(model, test, class_names)
    m = {**old, **metrics}
    write_eval_artifacts(Path(model_dir), m, None, predictions)
    return m

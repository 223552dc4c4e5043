"""Classification metrics in plain NumPy (shared by train, eval, export validation and bench)."""

from __future__ import annotations

import numpy as np


def top1_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose arg-max equals the label. probs: (N, C); labels: int (N,)."""
    return float(np.mean(np.argmax(probs, axis=1) == np.asarray(labels))) if len(labels) else float("nan")


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 (C, C) counts; row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return cm


def per_class_report(cm: np.ndarray, class_names: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    pred = cm.sum(axis=0).astype(np.float64)
    true = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {name: {"precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
                   "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, true)}


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean categorical cross-entropy (nats) of probabilities (N, C) against int labels (N,)."""
    p = np.clip(probs[np.arange(len(labels)), np.asarray(labels)], 1e-7, 1.0)
    return float(-np.mean(np.log(p)))

"""Training figures: learning curves and the confusion matrix (Agg PNGs via :mod:`edgeclf._mpl`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeclf._mpl import pyplot as _plt
from edgeclf._mpl import save_png as _save


def training_curves(history: list[dict], path: Path) -> Path:
    """Loss and top-1 accuracy per epoch (train and validation) -> PNG at ``path``."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "top-1 accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            ys = [h.get(prefix + key) for h in history]
            if any(y is not None for y in ys):
                ax.plot(epochs, ys, style, marker="o", ms=3, label=("val " if prefix else "train ") + key)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    phases = [h.get("phase") for h in history]
    for i in range(1, len(phases)):
        if phases[i] != phases[i - 1]:
            for ax in axes:
                ax.axvline(epochs[i] - 0.5, color="grey", lw=0.8)
    return _save(fig, path)


def confusion_matrix_plot(cm: np.ndarray, class_names: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true rows, predicted columns) with counts -> PNG."""
    plt = _plt()
    n = len(class_names)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.55 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix (counts; colour = row-normalised)")
    return _save(fig, path)

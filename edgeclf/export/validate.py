"""Validate an exported file exactly as it will run: through ``edgeclf.runtime.load_classifier``.

Compares it on held-out test images with the float Keras model and applies the accuracy gate.
TF-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeclf.metrics import top1_accuracy

BATCH = 256


class AccuracyGateError(RuntimeError):
    """One or more artifacts lost more accuracy than allowed. ``result`` is the partial ExportResult."""

    def __init__(self, message: str, result=None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Validation:
    """An artifact measured on ``n_images`` test images against the float model.

    ``top1_acc`` fraction; ``acc_drop_pp`` = (float top-1 - artifact top-1) x 100, percentage points
    (positive = worse); ``top1_agreement`` fraction of images with the same arg-max as the float
    model; ``max_abs_prob_diff`` largest |p_artifact - p_float| over all images and classes.
    """

    top1_acc: float
    acc_drop_pp: float
    top1_agreement: float
    max_abs_prob_diff: float
    n_images: int

    def to_dict(self) -> dict:
        return asdict(self)


def predict_file(path: Path, images: np.ndarray, progress: bool = False) -> np.ndarray:
    """Probabilities of a ``.tflite``/``.onnx`` file on the runtime, one engine thread per call.

    Args:
        path: the model file (its embedded metadata gives the input spec and labels).
        images: float32 (N, H, W, C) RGB/grey [0, 255].

    Returns:
        float32 (N, num_classes).

    Raises:
        edgeclf.runtime.ModelLoadError: the runtime cannot open the file.
    """
    from edgeclf.runtime import load_classifier

    clf = load_classifier(path, threads=1)
    starts = range(0, len(images), BATCH)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"validate {Path(path).name}", unit="batch", leave=False)
    try:
        return np.concatenate([clf.predict(images[i:i + BATCH]) for i in starts])
    finally:
        clf.close()


def compare(probs: np.ndarray, float_probs: np.ndarray, labels: np.ndarray, float_top1_acc: float) -> Validation:
    """Validation of ``probs`` (N, C) against the float model's ``float_probs`` (N, C) and int ``labels`` (N,)."""
    acc = top1_accuracy(probs, labels)
    return Validation(
        top1_acc=round(acc, 5),
        acc_drop_pp=round((float_top1_acc - acc) * 100.0, 3),
        top1_agreement=round(float(np.mean(probs.argmax(1) == float_probs.argmax(1))), 5),
        max_abs_prob_diff=round(float(np.abs(probs - float_probs).max()), 5),
        n_images=len(labels),
    )


def validate_file(path: Path, images: np.ndarray, labels: np.ndarray, float_probs: np.ndarray,
                  float_top1_acc: float, progress: bool = False) -> Validation:
    """Run ``path`` on the runtime over ``images`` and compare with the float model (see :class:`Validation`)."""
    return compare(predict_file(path, images, progress), float_probs, labels, float_top1_acc)


def gate_message(file_name: str, v: Validation, max_drop_pp: float) -> str | None:
    """A one-line failure message if ``v`` drops more than ``max_drop_pp`` points, else None."""
    if v.acc_drop_pp > max_drop_pp:
        return (f"{file_name}: top-1 {v.top1_acc:.4f} is {v.acc_drop_pp:.2f} points below the float model "
                f"(limit {max_drop_pp:g}; --allow-drop keeps it with status 'validation failed')")
    return None

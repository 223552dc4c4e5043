"""Validate an exported file exactly as it will run: through ``edgeclf.runtime.load_classifier``.

Compares it on held-out test images with the float Keras model (:class:`Validation`, a manifest
record) and applies the accuracy gate. TF-free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeclf.errors import AccuracyGateError  # noqa: F401  (re-exported)
from edgeclf.metrics import top1_accuracy
from edgeclf.runtime.manifest import Validation

BATCH = 256


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

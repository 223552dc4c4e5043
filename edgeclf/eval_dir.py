"""``evaluate_dir``: re-evaluate a model directory's float model on its test split."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from edgeclf.data import load_dataset
from edgeclf.evaluate import evaluate_model, write_eval_artifacts


def load_keras_model(model_dir: Path):
    """Load ``MODEL_DIR/model.keras`` (tf_keras).

    Raises:
        FileNotFoundError: no model.keras. ValueError: the file is not a loadable Keras model.
    """
    from edgeclf._keras import keras
    from edgeclf.schedules import WarmupCosine  # noqa: F401  (registers the schedule for loading)

    path = Path(model_dir) / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {model_dir} an edgeclf model directory?)")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        raise ValueError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {exc})") from None


def evaluate_dir(model_dir: Path, data: str | None = None) -> dict:
    """Evaluate ``model_dir``'s model.keras on the test split of its config's data (or ``data``).

    Rewrites metrics.json (keeping training facts) and confusion_matrix.png. Returns the metrics.
    """
    from edgeclf.train import load_config

    cfg = load_config(model_dir)
    dcfg = replace(cfg.data, source=data) if data else cfg.data
    model = load_keras_model(model_dir)
    ds = load_dataset(dcfg, channels=int(model.input_shape[-1]))
    metrics_path = Path(model_dir) / "metrics.json"
    old = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    m = {**old, **evaluate_model(model, ds.x_test, ds.y_test, ds.class_names)}
    write_eval_artifacts(Path(model_dir), m, None)
    return m

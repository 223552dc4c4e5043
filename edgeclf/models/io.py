"""Load a model directory's float model (``model.keras``, tf_keras)."""

from __future__ import annotations

from pathlib import Path

from edgeclf.errors import ModelLoadError, one_line


def load_keras_model(model_dir: Path):
    """Load ``MODEL_DIR/model.keras`` (tf_keras, without its optimizer).

    Returns:
        keras.Model: float32 (N, H, W, C) pixels in [0, 255] -> float32 (N, num_classes) probabilities.

    Raises:
        FileNotFoundError: no model.keras. ModelLoadError: the file is not a loadable Keras model.
    """
    from edgeclf._keras import keras

    path = Path(model_dir) / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {model_dir} an edgeclf model directory?)")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        raise ModelLoadError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {one_line(exc)})") from None

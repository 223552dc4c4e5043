"""Model architectures, one module each, and the registry that names them.

Every builder has the signature ``build(input_shape, num_classes, cfg) -> keras.Model`` and
returns a model taking float32 (N, H, W, C) pixels in [0, 255] (C = 3 RGB or 1 grey) and
returning float32 (N, num_classes) probabilities; resize and normalisation are inside the model.
"""

from __future__ import annotations

from typing import Callable

from edgeclf.models import cnn, cnn_small, mobilenet_v2
from edgeclf.models.config import ModelConfig

MODELS: dict[str, Callable] = {
    "cnn": cnn.build,
    "cnn-small": cnn_small.build,
    "mobilenet_v2": mobilenet_v2.build,
}

__all__ = ["MODELS", "ModelConfig", "build_model"]


def build_model(cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int):
    """Build the registered model ``cfg.name``.

    Raises:
        ValueError: unknown model name.
    """
    try:
        builder = MODELS[cfg.name]
    except KeyError:
        raise ValueError(f"unknown model {cfg.name!r}; choose one of {', '.join(MODELS)}") from None
    return builder(tuple(input_shape), int(num_classes), cfg)

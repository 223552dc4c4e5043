"""Model architectures, one module each, and the registry of :class:`ModelSpec` that names them.

Every builder has the signature ``build(input_shape, num_classes, cfg) -> keras.Model`` and
returns a model taking float32 (N, H, W, C) pixels in [0, 255] (C = 3 RGB or 1 grey) and
returning float32 (N, num_classes) probabilities; resize and normalisation are inside the model.
Importing this package (the registry, configs) loads no TensorFlow; building a model does.
"""

from __future__ import annotations

from edgeclf.models.config import ModelConfig
from edgeclf.models.registry import MODEL_OPTIONS, MODELS, build_model, get_spec
from edgeclf.models.spec import ModelSpec, Preprocessing

__all__ = ["MODELS", "MODEL_OPTIONS", "ModelConfig", "ModelSpec", "Preprocessing", "build_model", "get_spec"]

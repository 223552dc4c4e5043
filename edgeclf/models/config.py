"""Typed model configuration shared by the architectures."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgeclf.errors import ConfigError
from edgeclf.models.registry import get_spec


@dataclass(frozen=True)
class ModelConfig:
    """Architecture options. Each model uses the fields that apply to it.

    Attributes:
        name: registry name (``cnn``, ``cnn-small``, ``mobilenet_v2``).
        width: base channel width of ``cnn`` (stage widths are width x 1, 2, 4, 8).
        dropout: dropout rate before the classifier.
        alpha: MobileNetV2 width multiplier (Sandler et al. 2018).
        img_size: MobileNetV2 internal input size in pixels; the model resizes to it itself.
        weights: MobileNetV2 base weights: ``"imagenet"`` (Keras download), ``"none"`` or a path
            to an h5 weights file.
    """

    name: str = "cnn"
    width: int = 32
    dropout: float = 0.2
    alpha: float = 1.0
    img_size: int = 96
    weights: str = "imagenet"

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        get_spec(self.name)  # raises ConfigError for an unknown model
        if self.width < 4:
            raise ConfigError(f"width must be >= 4, got {self.width}")
        if self.img_size < 32:
            raise ConfigError(f"img_size must be >= 32, got {self.img_size}")

    def to_dict(self) -> dict:
        return asdict(self)

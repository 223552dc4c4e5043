"""Typed model configuration shared by the architectures."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgeclf.errors import ConfigError
from edgeclf.models.registry import get_spec

#: Values of the per-model fields when neither the user nor the model's ``ModelSpec.defaults`` give one.
FALLBACKS = {"alpha": 1.0, "img_size": 96, "weights": "imagenet", "logit_scale": 1.0, "bn_batch_stats": False,
             "stem": "conv"}
#: What a config.json written before a field existed was built with (``logit_scale``: no scale layer,
#: although the ``cnn`` layouts default to 0.125 today).
BEFORE_FIELD = {"logit_scale": 1.0, "bn_batch_stats": False, "stem": "conv"}
#: ``stem`` values of the ``cnn`` (:mod:`edgeclf.models.cnn`).
STEMS = ("conv", "whiten")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture options. Each model uses the fields its spec lists in ``options``.

    ``alpha``, ``img_size``, ``weights`` and ``logit_scale`` given as None take the model's default
    (``ModelSpec.defaults``, else :data:`FALLBACKS`), so after construction they are always set.

    Attributes:
        name: registry name (``edgeclf.models.MODELS``).
        width: base channel width of ``cnn`` (stage widths are width x 1, 2, 4, 8).
        dropout: dropout rate before the classifier.
        alpha: MobileNet width multiplier (Howard et al. 2017; Sandler et al. 2018; Howard et al. 2019).
        img_size: transfer models' internal input size in pixels; the model resizes to it itself.
        weights: transfer models' base weights: ``"imagenet"`` (Keras download), ``"none"`` or a
            path to an .h5 file of the no-top base's weights.
        logit_scale: ``cnn`` layouts: constant factor on the logits before the softmax (1 = none;
            :func:`edgeclf.models._head.classifier_head`); default 0.125 for the ``cnn`` layouts, 1
            for the others.
        bn_batch_stats: transfer models: the base is called without ``training=False``, so a
            BatchNormalization layer made trainable (phase 2 with ``train_bn``) normalises with each
            batch's statistics and updates its moving statistics (momentum 0.99) instead of staying in
            inference mode; the training loop first recalibrates them on training images
            (:mod:`edgeclf.models.bn_calibration`).
        stem: ``cnn``: the first layer, ``"conv"`` (3x3 Conv -> BN -> ReLU) or ``"whiten"`` (a frozen 2x2
            patch-whitening convolution computed from the training images, airbench94's;
            :func:`edgeclf.models.cnn.init_whitening`).

    Raises:
        ConfigError: unknown model, a value out of range, or an ``alpha`` without ImageNet weights
            together with ``weights="imagenet"``.
    """

    name: str = "cnn"
    width: int = 32
    dropout: float = 0.2
    alpha: float | None = None
    img_size: int | None = None
    weights: str | None = None
    logit_scale: float | None = None
    bn_batch_stats: bool | None = None
    stem: str | None = None

    def __post_init__(self) -> None:
        spec = get_spec(self.name)  # raises ConfigError for an unknown model
        for key, fallback in FALLBACKS.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, spec.defaults.get(key, fallback))
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.width < 4:
            raise ConfigError(f"width must be >= 4, got {self.width}")
        if self.img_size < 32:
            raise ConfigError(f"img_size must be >= 32, got {self.img_size}")
        if self.logit_scale <= 0:
            raise ConfigError(f"logit_scale must be > 0, got {self.logit_scale}")
        if self.stem not in STEMS:
            raise ConfigError(f"stem must be one of {', '.join(STEMS)}, got {self.stem!r}")
        if self.alpha <= 0:
            raise ConfigError(f"alpha must be > 0, got {self.alpha}")
        if (self.weights == "imagenet" and "alpha" in spec.options and spec.pretrained_alphas
                and float(self.alpha) not in spec.pretrained_alphas):
            allowed = ", ".join(f"{a:g}" for a in spec.pretrained_alphas)
            raise ConfigError(f"alpha {self.alpha:g}: {self.name} has ImageNet weights only for alpha {allowed} "
                              "(or use --weights none / a weights file)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """The ModelConfig a saved ``config.json`` describes; a field that older edgeclf versions did not
        write takes the value those versions built with (:data:`BEFORE_FIELD`), not today's default.

        Raises:
            ConfigError: as the constructor.
        """
        return cls(**{**BEFORE_FIELD, **d})

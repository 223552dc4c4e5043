"""Typed, validated training configuration (saved as ``config.json`` in the model directory)."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, replace

from edgeclf.data.config import AugmentConfig, DataConfig
from edgeclf.models.config import ModelConfig


class Optimizer(str, enum.Enum):
    ADAM = "adam"
    SGD = "sgd"


class ClassWeight(str, enum.Enum):
    NONE = "none"
    BALANCED = "balanced"


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs.

    Attributes:
        model, data, augment: sub-configs.
        epochs: training epochs (for ``mobilenet_v2``: phase-2 fine-tuning epochs).
        head_epochs: ``mobilenet_v2`` phase 1, epochs with the base frozen (0 skips it).
        fine_tune_layers: ``mobilenet_v2`` phase 2, number of last base layers trained (-1 = all).
        batch_size: images per step.
        optimizer: ``adam`` or ``sgd`` (Nesterov, momentum 0.9).
        lr: peak learning rate. The schedule warms up linearly for ``warmup_fraction`` of the steps
            then follows a cosine decay to 0 (one-cycle, Smith & Topin 2017).
        fine_tune_lr: peak learning rate of ``mobilenet_v2`` phase 2.
        weight_decay: decoupled weight decay (Loshchilov & Hutter 2019); not applied to BN/biases.
        label_smoothing: label smoothing of the cross-entropy (Szegedy et al. 2016).
        patience: early stopping on validation top-1 accuracy (best weights restored); 0 disables.
        class_weight: ``balanced`` weights the loss by inverse class frequency.
        mixed_precision: train in ``mixed_bfloat16``; the saved model is always float32. Only a
            win on CPUs with AMX/AVX512-BF16 (measured on an AVX2-only EPYC: ~5x *slower*).
        seed: seeds Python/NumPy/TensorFlow and the data splits.
        name, out: the model directory is ``out/name``.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int = 15
    head_epochs: int = 1
    fine_tune_layers: int = -1
    batch_size: int = 256
    optimizer: Optimizer = Optimizer.SGD
    lr: float = 0.2
    fine_tune_lr: float = 1e-4
    warmup_fraction: float = 0.15
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    patience: int = 0
    class_weight: ClassWeight = ClassWeight.NONE
    mixed_precision: bool = False
    seed: int = 42
    name: str = ""
    out: str = "export"

    def __post_init__(self) -> None:
        if self.epochs < 1 and not (self.model.name == "mobilenet_v2" and self.head_epochs > 0):
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0 or self.fine_tune_lr <= 0:
            raise ValueError("learning rates must be > 0")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.head_epochs < 0 or self.patience < 0:
            raise ValueError("head_epochs and patience must be >= 0")
        if self.patience and self.data.val_split == 0:
            raise ValueError("patience (early stopping on validation accuracy) needs a validation split; "
                             "set val_split > 0 or patience 0")

    @property
    def run_name(self) -> str:
        """``name`` or ``<dataset>-<model>``."""
        if self.name:
            return self.name
        src = self.data.source.rstrip("/").split("/")[-1] or "data"
        return f"{src}-{self.model.name}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["optimizer"] = self.optimizer.value
        d["class_weight"] = self.class_weight.value
        d["data"] = self.data.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["model"] = ModelConfig(**d["model"])
        d["data"] = DataConfig.from_dict(d["data"])
        d["augment"] = AugmentConfig(**d["augment"])
        d["optimizer"] = Optimizer(d["optimizer"])
        d["class_weight"] = ClassWeight(d["class_weight"])
        return cls(**d)

    def with_(self, **changes) -> "TrainConfig":
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)


# Per-model recipe defaults, used by the CLI where the user gives no value. Chosen for this
# 2-core CPU budget; see README "Training recipes".
RECIPES: dict[str, dict] = {
    # cnn: ResNet-9 at half width (95 M MACs). Page (2018)'s ResNet-9 recipe in mean-loss terms:
    # batch 512, Nesterov SGD (peak 0.2: 0.4 diverged without its 0.125 logit scale); Keras' decoupled weight decay 5e-3 x lr is about the
    # coupled L2 5e-4 of the reference once momentum (1 / (1 - 0.9)) is accounted for.
    "cnn": dict(epochs=30, batch_size=512, optimizer=Optimizer.SGD, lr=0.2, weight_decay=5e-3,
                label_smoothing=0.1),
    "cnn-small": dict(epochs=15, batch_size=64, optimizer=Optimizer.ADAM, lr=1e-3, weight_decay=0.0,
                      label_smoothing=0.0),
    "mobilenet_v2": dict(epochs=5, head_epochs=1, batch_size=64, optimizer=Optimizer.ADAM, lr=1e-3,
                         fine_tune_lr=3e-4, weight_decay=0.0, label_smoothing=0.1, fine_tune_layers=60),
}

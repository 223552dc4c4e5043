"""``ModelSpec``: everything model-specific, in one frozen record per registered model.

Pattern: timm's ``register_model`` + ``PretrainedCfg`` and optimum's per-model ``OnnxConfig``: the
CLI's choices, which options apply, the default training recipe and the training phases all come
from the spec, so no code outside :mod:`edgeclf.models` branches on a model's name.

The builder and the optional hooks are ``"module:function"`` strings imported on first use, so the
registry (and everything that reads it: the CLI, ``TrainConfig``) imports no TensorFlow.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


class Preprocessing(str, enum.Enum):
    """The input normalisation a model embeds (its input is always float32 RGB/grey in [0, 255]).

    The modes of ``keras.applications.imagenet_utils.preprocess_input``:

    * ``MINUS_ONE_TO_ONE``: ``x / 127.5 - 1`` ("tf" mode: MobileNet V1/V2, and MobileNetV3's
      built-in ``Rescaling``);
    * ``ZERO_TO_ONE``: ``x / 255``;
    * ``CAFFE``: RGB -> BGR, then minus the ImageNet BGR mean (103.939, 116.779, 123.68), no scaling
      (ResNet50, VGG16);
    * ``TORCH``: ``(x / 255 - mean) / std`` with the ImageNet RGB mean (0.485, 0.456, 0.406) and std
      (0.229, 0.224, 0.225) (EfficientNetV2-B* built-in ``Rescaling`` + ``Normalization``).
    """

    MINUS_ONE_TO_ONE = "[-1,1]"
    ZERO_TO_ONE = "[0,1]"
    CAFFE = "caffe"
    TORCH = "torch"


def _load(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _frozen(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        name: the ``--model`` name and ``ModelConfig.name``.
        summary: one line for ``edgeclf train --help``.
        builder: ``"module:function"`` with the signature
            ``build(input_shape: (H, W, C), num_classes: int, cfg: ModelConfig) -> keras.Model``
            returning float32 (N, H, W, C) [0, 255] -> float32 (N, num_classes) probabilities.
        preprocessing: the normalisation the model embeds (see :class:`Preprocessing`).
        recipe: default ``TrainConfig`` values for this model (field name -> value; enums as their
            string values), applied where the user gives no option.
        options: the model-specific ``ModelConfig``/``TrainConfig`` fields (and so CLI options) that
            apply to this model; giving another model's option is refused.
        two_phase: transfer learning in two phases: ``head_epochs`` with the pretrained base frozen,
            then ``epochs`` fine-tuning the last ``fine_tune_layers`` base layers at ``fine_tune_lr``.
        set_base_trainable: ``"module:function"`` ``(model, last_n_layers) -> n_trainable`` used by
            the two-phase schedule (required when ``two_phase``).
        check_weights: ``"module:function"`` ``(weights: str) -> None`` raising ``WeightsError``
            for an unusable ``--weights`` before any data is loaded; None = no pretrained weights.
        data_init: ``"module:function"`` ``(model, images) -> str | None`` setting weights computed from
            un-augmented training images (float32 (N, H, W, C) [0, 255]) before the first epoch, returning
            a line for the log (None = nothing to do for this configuration); None = no such step.
        defaults: ``ModelConfig`` values for this model where the user gives none (e.g. its
            ``img_size``); fields not listed take the ``ModelConfig`` fallbacks.
        pretrained_alphas: the ``alpha`` values with ImageNet weights (``--weights imagenet`` with
            another alpha is refused); empty = no restriction.
        tiny: ``ModelConfig`` overrides giving a small, fast variant for tests.
        auto_input_size: for image folders whose images are larger than this (pixels, square), the
            default training/model input size (None = the data's native size). Models that resize
            inside themselves (``"img_size"`` in ``options``) use their ``img_size`` instead.
    """

    name: str
    summary: str
    builder: str
    preprocessing: Preprocessing
    recipe: Mapping[str, Any] = field(default_factory=dict)
    options: frozenset[str] = frozenset()
    two_phase: bool = False
    set_base_trainable: str | None = None
    check_weights: str | None = None
    data_init: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    pretrained_alphas: tuple[float, ...] = ()
    tiny: Mapping[str, Any] = field(default_factory=dict)
    auto_input_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipe", _frozen(self.recipe))
        object.__setattr__(self, "defaults", _frozen(self.defaults))
        object.__setattr__(self, "pretrained_alphas", tuple(self.pretrained_alphas))
        object.__setattr__(self, "tiny", _frozen(self.tiny))
        object.__setattr__(self, "options", frozenset(self.options))
        if self.two_phase and not self.set_base_trainable:
            raise ValueError(f"{self.name}: a two-phase spec needs set_base_trainable")

    def build(self, cfg, input_shape: tuple[int, int, int], num_classes: int):
        """Build the Keras model (imports TensorFlow). See ``builder`` for shapes and dtypes."""
        return _load(self.builder)(tuple(int(d) for d in input_shape), int(num_classes), cfg)

    def default_input_size(self, cfg, native: tuple[int, int]) -> tuple[int, int]:
        """The input size (height, width) to train at for data whose native size is ``native``.

        The native size unless it is larger than the model needs: models that resize inside
        themselves get their ``cfg.img_size`` (resizing once, with area averaging, in the data
        pipeline is better than bilinear inside the model), others ``auto_input_size``.
        Never enlarges.
        """
        cap = int(cfg.img_size) if "img_size" in self.options else self.auto_input_size
        if cap is None or max(native) <= cap:
            return tuple(native)
        scale = cap / max(native)
        return max(8, round(native[0] * scale)), max(8, round(native[1] * scale))

    def init_from_data(self, model, images) -> str | None:
        """Run the spec's ``data_init`` (weights computed from training images) on ``model``; None when
        the spec has none or it had nothing to do."""
        return _load(self.data_init)(model, images) if self.data_init else None

    def validate_weights(self, weights: str) -> None:
        """Raise ``edgeclf.errors.WeightsError`` if ``weights`` can't be used (no-op without weights)."""
        if self.check_weights:
            _load(self.check_weights)(weights)

    def make_base_trainable(self, model, last_n_layers: int, train_bn: bool = False) -> int:
        """Two-phase models: freeze the base, unfreeze its last ``last_n_layers`` (-1 = all), their
        BatchNorm scale/offset too with ``train_bn``; returns the number of trainable base layers."""
        if not self.set_base_trainable:
            raise ValueError(f"{self.name} has no pretrained base")
        return int(_load(self.set_base_trainable)(model, last_n_layers, train_bn))

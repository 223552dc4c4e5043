"""The model registry: one :class:`ModelSpec` per ``--model`` name.

Adding a model = one module with a ``build`` function + one entry here (see docs/architecture.md).
Imports no TensorFlow.
"""

from __future__ import annotations

from edgeclf.errors import ConfigError
from edgeclf.models.spec import ModelSpec, Preprocessing

_TRANSFER = frozenset({"weights", "alpha", "img_size", "head_epochs", "fine_tune_layers", "fine_tune_lr"})

MODELS: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec(
        name="cnn",
        summary="residual CNN for small inputs (ResNet-9 layout, Conv-BN-ReLU, int8-clean)",
        builder="edgeclf.models.cnn:build",
        preprocessing=Preprocessing.MINUS_ONE_TO_ONE,
        # ResNet-9 at half width (95 M MACs at 32x32). Page (2018)'s ResNet-9 recipe in mean-loss
        # terms: batch 512, Nesterov SGD (peak 0.2: 0.4 diverged without its 0.125 logit scale);
        # Keras' decoupled weight decay 5e-3 x lr is about the coupled L2 5e-4 of the reference once
        # momentum (1 / (1 - 0.9)) is accounted for.
        recipe={"epochs": 30, "batch_size": 512, "optimizer": "sgd", "lr": 0.2, "weight_decay": 5e-3,
                "label_smoothing": 0.1},
        options={"width"},
        tiny={"width": 4, "dropout": 0.0},
        auto_input_size=64,
    ),
    ModelSpec(
        name="cnn-small",
        summary="the reference notebook CNN (baseline)",
        builder="edgeclf.models.cnn_small:build",
        preprocessing=Preprocessing.ZERO_TO_ONE,
        recipe={"epochs": 15, "batch_size": 64, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
                "label_smoothing": 0.0},
        tiny={},
        auto_input_size=32,
    ),
    ModelSpec(
        name="mobilenet_v2",
        summary="MobileNetV2 ImageNet transfer learning (two phases)",
        builder="edgeclf.models.mobilenet_v2:build",
        preprocessing=Preprocessing.MINUS_ONE_TO_ONE,
        recipe={"epochs": 5, "head_epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 1e-3,
                "fine_tune_lr": 3e-4, "weight_decay": 0.0, "label_smoothing": 0.1, "fine_tune_layers": 60},
        options=_TRANSFER,
        two_phase=True,
        set_base_trainable="edgeclf.models.mobilenet_v2:set_base_trainable",
        check_weights="edgeclf.models.mobilenet_v2:check_weights",
        tiny={"alpha": 0.35, "img_size": 32, "weights": "none", "dropout": 0.0},
    ),
)}

#: Every model-specific option of any spec (the CLI refuses those the chosen model lacks).
MODEL_OPTIONS: frozenset[str] = frozenset().union(*(s.options for s in MODELS.values()))


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``.

    Raises:
        ConfigError: unknown name (the message lists the registered ones).
    """
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def build_model(cfg, input_shape: tuple[int, int, int], num_classes: int):
    """Build the registered model ``cfg.name`` (a ``ModelConfig``) for ``input_shape`` (H, W, C).

    Returns:
        keras.Model: float32 (N, H, W, C) [0, 255] -> float32 (N, num_classes) probabilities.

    Raises:
        ConfigError: unknown model name. WeightsError: pretrained weights not loadable.
    """
    return get_spec(cfg.name).build(cfg, input_shape, num_classes)

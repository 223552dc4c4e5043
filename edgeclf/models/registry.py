"""The model registry: one :class:`ModelSpec` per ``--model`` name.

Adding a model = one module with a ``build`` function + one entry here (see docs/architecture.md).
Imports no TensorFlow.
"""

from __future__ import annotations

from edgeclf.errors import ConfigError
from edgeclf.models.spec import ModelSpec, Preprocessing

_TRANSFER = frozenset({"weights", "img_size", "head_epochs", "fine_tune_layers", "train_bn", "fine_tune_lr",
                       "bn_batch_stats"})
_TRANSFER_BUILDER = "edgeclf.models.transfer:build"

#: The transfer recipe the other backbones start from (untuned for them: measured for mobilenet_v2 only,
#: see docs/models.md): one head epoch with the base frozen, then fine-tuning at a lower rate.
_TRANSFER_RECIPE = {"epochs": 5, "head_epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 1e-3,
                    "fine_tune_lr": 3e-4, "weight_decay": 0.0, "label_smoothing": 0.1}


def _transfer(name: str, summary: str, preprocessing: Preprocessing, fine_tune_layers: int,
              alphas: tuple[float, ...] = (), img_size: int = 96, **recipe) -> ModelSpec:
    """A two-phase ImageNet transfer spec built by ``edgeclf.models.transfer`` (family row ``name``).

    ``alphas``: the width multipliers with ImageNet weights (empty: the family has no ``--alpha``);
    the tiny test variant takes the smallest one, 32 px and no weights.
    """
    tiny = {"img_size": 32, "weights": "none", "dropout": 0.0, **({"alpha": min(alphas)} if alphas else {})}
    return ModelSpec(
        name=name, summary=summary, builder=_TRANSFER_BUILDER, preprocessing=preprocessing,
        recipe={**_TRANSFER_RECIPE, "fine_tune_layers": fine_tune_layers, **recipe},
        options=_TRANSFER | ({"alpha"} if alphas else set()), two_phase=True,
        set_base_trainable="edgeclf.models.transfer:set_base_trainable",
        check_weights="edgeclf.models.transfer:check_weights",
        defaults={"img_size": img_size}, pretrained_alphas=alphas, tiny=tiny)


#: The from-scratch cnn recipe (both layouts): airbench94's hyper-parameters (Jordan 2024,
#: legacy/airbench94.py) in Keras' mean-loss, decoupled-decay terms, at batch 512 with Nesterov SGD
#: (momentum 0.9). Per 1,024 training images airbench steps ~11.5x the mean gradient and decays the
#: weights by ~1.3 %; peak lr 0.5 (x 10 for momentum, x 2 steps) and weight decay 0.0133 (x lr x 2
#: steps) match that. The logits are scaled by 0.125 (ModelSpec defaults; airbench 1/9, ResNet-9
#: 1/8), without which lr 0.4 diverged; label smoothing 0.2 as airbench. Measured against round 2's
#: first recipe (lr 0.2, weight decay 5e-3, smoothing 0.1, no logit scale): 81.77 % vs 75.86 % after
#: 4 epochs on all 50,000 images, McNemar p = 4e-68 (benchmarks/results/cnn-recipe-ab). Measured on
#: the ``cnn`` layout only; ``cnn-resnet9`` shares it untested.
#: mixed_precision "auto": bf16 where the CPU computes it natively (2.1x faster on a Xeon with AMX, 1.7x on
#: Zen 4: edgeclf.train.config.resolve_mixed_precision).
_CNN_RECIPE = {"batch_size": 512, "optimizer": "sgd", "lr": 0.5, "weight_decay": 0.0133, "label_smoothing": 0.2,
               "mixed_precision": "auto"}


def _scratch_cnn(name: str, summary: str, builder: str, epochs: int,
                 time_budget_hours: float | None = None, stem: bool = False) -> ModelSpec:
    """A from-scratch ``cnn`` layout: [-1, 1] input, ``--width``, logits x 0.125 (``--logit-scale``), the cnn
    recipe for ``epochs`` epochs (at most: ``time_budget_hours`` re-plans fewer where they would not fit),
    64 px automatic input size for large photos, width 4 in tests; ``stem``: the layout takes ``--stem``
    (its whitening stem computed from the training images by ``edgeclf.models.cnn:init_whitening``)."""
    budget = {"time_budget_hours": time_budget_hours} if time_budget_hours else {}
    return ModelSpec(name=name, summary=summary, builder=builder, preprocessing=Preprocessing.MINUS_ONE_TO_ONE,
                     recipe={"epochs": epochs, **budget, **_CNN_RECIPE},
                     options={"width", "logit_scale"} | ({"stem"} if stem else set()),
                     data_init="edgeclf.models.cnn:init_whitening" if stem else None,
                     defaults={"logit_scale": 0.125}, tiny={"width": 4, "dropout": 0.0}, auto_input_size=64)


MODELS: dict[str, ModelSpec] = {s.name: s for s in (
    _scratch_cnn(
        "cnn", "CNN for small inputs (airbench layout, Conv-BN-ReLU, int8-clean)", "edgeclf.models.cnn:build",
        # airbench94's layout with ReLU (152 M MACs at 32x32). Up to 90 epochs within a 2 h budget: the
        # budget re-plans fewer epochs (and a shorter schedule) where they would not fit, so the run
        # takes <= 2 h on any CPU and trains as long as the CPU allows. 26 epochs gave 89.23 %, 45 epochs
        # 89.70 % (AMX Xeon, McNemar p 0.099) and 89.97 % (whole-pixel --translate, Zen 4, 7,626 s);
        # 90 epochs under a 1.85 h budget: 56 fit on a slow 2-vCPU Zen 5 VM (101-121 s per epoch),
        # 90.04 % in 6,604 s (benchmarks/results/cifar10-cnn-budget). No cutout: --cutout 8 at 45 epochs
        # gave 89.72 % (McNemar p 0.97 against the run without it; at 26 epochs -0.37, p 0.15). docs/results.md.
        epochs=90, time_budget_hours=2.0, stem=True),
    _scratch_cnn("cnn-resnet9", "ResNet-9 (Page 2018) at half width, round 2's first cnn",
                 "edgeclf.models.cnn:build_resnet9", epochs=30),
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
    # Transfer backbones (docs/models.md). mobilenet_v2 first: the measured, recommended one.
    # mobilenet_v2's round-2 recipe: the whole base fine-tuned at 160 px for 1 + up to 14 epochs (the time
    # budget re-plans fewer where they would not fit: 12 on a 2-vCPU Zen 5), BatchNorm gamma/beta learning
    # in phase 2 (--train-bn; moving statistics fixed), within a 2 h budget.
    # Measured on full CIFAR-10 (docs/results.md, "Measured results, round 2"): round 1's 96 px / last 60 layers /
    # 5 epochs 88.26 %; 128 px with BatchNorm frozen 91.63 %; --train-bn at 128 px 92.50 % (4,134 s), at
    # 160 px 92.80 % after 10 epochs (4,664 s, Zen 5; benchmarks/results/cifar10-mobilenet_v2-trainbn-160),
    # 92.95 % after 12 of 14 (6,680 s, --time-budget 1.9; ...-trainbn-160-14ep); fine-tune lr 4e-4 gave
    # 92.54 % after 10 (-0.26 vs 2e-4; mobilenet_v2-lr-ab); --mixup 0.1 92.74 % after 12 (-0.21, p 0.36;
    # mobilenet_v2-mixup-ab); --ema-decay 0.9995 92.53 % after 8 (a Zen 4, where 2 h fit 8 epochs;
    # mobilenet_v2-ema-zen4); the default on a slow Zen 4 day 92.46 % after 8 (93.11 % with flip TTA;
    # cifar10-mobilenet_v2-zen4-s27). --train-bn models lose 0.8-2 points in post-training int8, so a plain
    # `edgeclf export` makes them again with QAT (--auto-qat, --auto-qat-above 0.3), two epochs for
    # --train-bn models (qat_epochs_for): +0.10 / +0.08 points (12 epochs; one epoch: +0.33 / +0.24),
    # +0.25 / +0.18 (the 8-epoch Zen 4 model).
    _transfer("mobilenet_v2", "MobileNetV2 ImageNet transfer learning (two phases)",
              Preprocessing.MINUS_ONE_TO_ONE, -1, alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
              img_size=160, epochs=14, fine_tune_lr=2e-4, train_bn=True, time_budget_hours=2.0),
    _transfer("mobilenet", "MobileNet V1 transfer (ReLU6, int8-clean)",
              Preprocessing.MINUS_ONE_TO_ONE, 31, alphas=(0.25, 0.5, 0.75, 1.0)),
    _transfer("mobilenet_v3_small", "MobileNetV3-Small transfer (hard-swish, SE)",
              Preprocessing.MINUS_ONE_TO_ONE, 75, alphas=(0.75, 1.0)),
    _transfer("mobilenet_v3_large", "MobileNetV3-Large transfer (hard-swish, SE)",
              Preprocessing.MINUS_ONE_TO_ONE, 75, alphas=(0.75, 1.0)),
    _transfer("efficientnetv2_b0", "EfficientNetV2-B0 transfer (fused-MBConv, swish, SE)",
              Preprocessing.TORCH, 93),
    _transfer("resnet50", "ResNet50 transfer (caffe BGR-mean input, 23.6 M base params)",
              Preprocessing.CAFFE, 32, img_size=64, fine_tune_lr=1e-4),
    _transfer("vgg16", "VGG16 transfer (caffe BGR-mean input, 14.7 M base params)",
              Preprocessing.CAFFE, 4, img_size=32, fine_tune_lr=1e-4),
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

"""``cnn``: a small CNN for 32x32 inputs, built for accuracy per training FLOP and clean int8 export.

Layout: the network of airbench94 (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
https://github.com/KellerJordan/cifar10-airbench) with ReLU instead of GELU, a 3x3 stem instead of
its 2x2 patch-whitening convolution, and Conv -> BN -> ReLU -> MaxPool order so every BatchNorm folds
into its convolution:

    stem conv(w)
    -> block(2w): conv(2w) + maxpool, conv(2w)       32x32 -> 16x16
    -> block(8w): conv(8w) + maxpool, conv(8w)       16x16 -> 8x8
    -> block(8w): conv(8w) + maxpool, conv(8w)        8x8 -> 4x4
    -> global max pool -> dropout -> dense -> softmax

Most of the width sits at low resolution (256 channels at 8x8 and 4x4 for w = 32), where a
convolution costs few MACs per parameter. At 32x32x3 with 10 classes: width 32 (default) 1.98 M
parameters, 152 M MACs per image; width 4 (tiny tests) 32 k parameters, 2.5 M MACs.

Measured on 10,000 CIFAR-10 training images, 10 epochs of the cnn recipe, 2-core AMD EPYC
Zen 4 (benchmarks/results/cifar10-cnn/ablation.md): 54.0 % test top-1 against 49.0 % for round 2's
ResNet-9 half-width layout (:func:`build_resnet9`, ``--model cnn-resnet9``), at 1.6x the time per epoch.

Every conv is Conv(no bias) -> BatchNorm -> ReLU, so the int8 graph is integer end to end (the
``cnn-small`` reference puts BN after ReLU, which cannot fold).
"""

from __future__ import annotations

from edgeclf._keras import keras
from edgeclf.models._head import classifier_head
from edgeclf.models.config import ModelConfig

L = keras.layers


def conv_bn_relu(x, filters: int, name: str):
    """3x3 'same' Conv2D (no bias) -> BatchNormalization -> ReLU."""
    x = L.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def _inputs(input_shape: tuple[int, int, int]):
    inputs = keras.Input(shape=input_shape, name="image")
    return inputs, L.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(inputs)  # [0,255] -> [-1,1]


def build(input_shape: tuple[int, int, int], num_classes: int, cfg: ModelConfig) -> keras.Model:
    """Build ``cnn`` (module docstring).

    Args:
        input_shape: (H, W, C) with C = 3 (RGB) or 1 (grey), H and W >= 8; float32 pixels in [0, 255].
        num_classes: number of output classes.
        cfg: uses ``width`` (stem width w; blocks 2w, 8w, 8w), ``dropout`` and ``logit_scale``.

    Returns:
        keras.Model: float32 (N, H, W, C) [0, 255] -> float32 (N, num_classes) probabilities.
    """
    w = cfg.width
    inputs, x = _inputs(input_shape)
    x = conv_bn_relu(x, w, "stem")
    for i, filters in enumerate((2 * w, 8 * w, 8 * w), start=1):
        x = conv_bn_relu(x, filters, f"block{i}a")
        x = L.MaxPooling2D(2, name=f"block{i}_pool")(x)
        x = conv_bn_relu(x, filters, f"block{i}b")
    return keras.Model(inputs, classifier_head(x, num_classes, cfg.dropout, pool="max", logit_scale=cfg.logit_scale), name="cnn")


def _residual(x, filters: int, name: str):
    y = conv_bn_relu(x, filters, f"{name}a")
    y = conv_bn_relu(y, filters, f"{name}b")
    return L.Add(name=f"{name}_add")([x, y])


def build_resnet9(input_shape: tuple[int, int, int], num_classes: int, cfg: ModelConfig) -> keras.Model:
    """Build ``cnn-resnet9``: the ResNet-9 of Page (2018), "How to train your ResNet" (DAWNBench
    CIFAR-10), at ``width``/64 of its width (w = 32: 32/64/128/256 channels, 1.65 M parameters,
    95 M MACs at 32x32; round 2's first ``cnn``, 88.11 % on CIFAR-10 JPEG in 30 epochs):

        prep conv(w) -> conv(2w) + maxpool -> residual[conv(2w), conv(2w)]
        -> conv(4w) + maxpool -> conv(8w) + maxpool -> residual[conv(8w), conv(8w)]
        -> global average pool -> dropout -> dense -> softmax

    Args/returns as :func:`build`.
    """
    w = cfg.width
    inputs, x = _inputs(input_shape)
    x = conv_bn_relu(x, w, "prep")
    x = conv_bn_relu(x, 2 * w, "layer1")
    x = L.MaxPooling2D(2, name="layer1_pool")(x)
    x = _residual(x, 2 * w, "res1")
    x = conv_bn_relu(x, 4 * w, "layer2")
    x = L.MaxPooling2D(2, name="layer2_pool")(x)
    x = conv_bn_relu(x, 8 * w, "layer3")
    x = L.MaxPooling2D(2, name="layer3_pool")(x)
    x = _residual(x, 8 * w, "res3")
    return keras.Model(inputs, classifier_head(x, num_classes, cfg.dropout, logit_scale=cfg.logit_scale), name="cnn")

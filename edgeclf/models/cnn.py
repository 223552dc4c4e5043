"""``cnn``: a small CNN for 32x32 inputs, built for accuracy per training FLOP and clean int8 export.

Layout: the network of airbench94 (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
https://github.com/KellerJordan/cifar10-airbench) with ReLU instead of GELU, by default a 3x3 stem
instead of its 2x2 patch-whitening convolution (``--stem whiten`` has that one, :func:`whitening_stem`),
and Conv -> BN -> ReLU -> MaxPool order so every BatchNorm folds into its convolution:

    stem conv(w)  (--stem whiten: frozen 2x2 whitening conv(24) + ReLU, 32x32 -> 31x31)
    -> block(2w): conv(2w) + maxpool, conv(2w)       32x32 -> 16x16
    -> block(8w): conv(8w) + maxpool, conv(8w)       16x16 -> 8x8
    -> block(8w): conv(8w) + maxpool, conv(8w)        8x8 -> 4x4
    -> global max pool -> dropout -> dense -> softmax

Most of the width sits at low resolution (256 channels at 8x8 and 4x4 for w = 32), where a
convolution costs few MACs per parameter. At 32x32x3 with 10 classes: width 32 (default) 1.98 M
parameters, 152 M MACs per image; width 4 (tiny tests) 32 k parameters, 2.5 M MACs. With ``--stem
whiten``: 1.98 M parameters (288 of them the frozen stem), 118 M MACs, as airbench94 (whose 118,147,360
MACs ``benchmarks/airbench_reference.py`` counts).

Measured on 10,000 CIFAR-10 training images, 10 epochs of the cnn recipe, 2-core AMD EPYC
Zen 4 (benchmarks/results/cifar10-cnn/ablation.md): 54.0 % test top-1 against 49.0 % for round 2's
ResNet-9 half-width layout (:func:`build_resnet9`, ``--model cnn-resnet9``), at 1.6x the time per epoch.

Every conv is Conv(no bias) -> BatchNorm -> ReLU (the whitening stem: Conv(no bias) -> ReLU), so the
int8 graph is integer end to end (the ``cnn-small`` reference puts BN after ReLU, which cannot fold).
"""

from __future__ import annotations

import numpy as np

from edgeclf._keras import keras, tf
from edgeclf.models._head import classifier_head
from edgeclf.models.config import ModelConfig

L = keras.layers


def conv_bn_relu(x, filters: int, name: str):
    """3x3 'same' Conv2D (no bias) -> BatchNormalization -> ReLU."""
    x = L.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


#: Name of the whitening stem's convolution (:func:`whitening_stem`, :func:`init_whitening`).
WHITEN = "whiten"
#: Eigenvalue floor of the whitening, relative to the mean eigenvalue (so it means the same whatever the
#: pixel scale). airbench94 uses 5e-4 (on per-channel standardised pixels); 5e-3 here because JPEG photos
#: with 4:2:0 chroma subsampling keep almost no high-frequency colour: on the JPEG CIFAR-10 the two
#: smallest of the 12 eigenvalues are ~1e-4 of the mean, and 5e-4 scaled that residue (compression noise)
#: up ~75x to 0.2-0.3 of an image direction's variance. 10 epochs of the ``cnn`` (Zen 4, paired, one run
#: each): 87.75 % with 5e-3 against 87.43 % with 5e-4 (McNemar p = 0.18) and 87.92 % for the 3x3 stem
#: (benchmarks/results/cnn-10ep-ab).
WHITEN_EPS = 5e-3


def whitening_stem(x, channels: int):
    """airbench94's first layer: a 2x2 'valid' convolution (no bias) onto ``2 * 4 * channels`` outputs whose
    weights are the whitening transform of the training images' 2x2 patches and its negation, frozen, then
    ReLU (airbench94 uses GELU and trains a bias for 3 epochs; ReLU and no bias keep it int8-clean).

    Until :func:`init_whitening` sets them the weights are random (He normal). (N, H, W, channels) ->
    (N, H - 1, W - 1, 8 * channels).
    """
    x = L.Conv2D(2 * 4 * channels, 2, padding="valid", use_bias=False, trainable=False,
                 kernel_initializer="he_normal", name=WHITEN)(x)
    return L.ReLU(name=f"{WHITEN}_relu")(x)


def init_whitening(model: keras.Model, images) -> str | None:
    """Set the whitening stem of a ``--stem whiten`` ``cnn`` from training images (ModelSpec ``data_init``).

    Method (airbench94, Jordan 2024, ``init_whitening_conv``): the covariance ``S`` of all 2x2 patches of
    the normalised images (d = 4 x channels values each, not mean-centred), its eigen-decomposition
    ``S = V diag(l) V^T``, and the filters ``V / sqrt(l + eps)`` and their negation, so the layer's
    outputs are the patches in the eigenbasis, each scaled to unit variance (to ``l / (l + eps)``, where
    eps is :data:`WHITEN_EPS` times the mean of ``l``). The filters are ordered by decreasing eigenvalue.

    Args:
        model: a ``cnn`` (:func:`build`); one without a whitening stem is left unchanged.
        images: float32 or uint8 (N, H, W, C) pixels in [0, 255], un-augmented training images (the
            training loop passes up to 5,000, as airbench94 uses).

    Returns:
        A line for the training log, or None when ``model`` has no whitening stem.

    Raises:
        ValueError: no images, or images whose channels differ from the model's input.
    """
    try:
        layer = model.get_layer(WHITEN)
    except ValueError:
        return None
    x = np.asarray(images, dtype=np.float32)
    kh, kw, c, out = layer.kernel.shape
    if x.ndim != 4 or len(x) == 0 or x.shape[-1] != c:
        raise ValueError(f"init_whitening: need (N, H, W, {c}) images, got shape {x.shape}")
    norm = model.get_layer("normalize")  # in float32 here: under mixed_bfloat16 the layer would round to bf16
    x = x * np.float32(norm.scale) + np.float32(norm.offset)
    cov, n = np.zeros((kh * kw * c,) * 2), 0
    for i in range(0, len(x), 256):  # in chunks: 5,000 64x64 photos would be ~2 GB of float64 patches at once
        # (B, H-1, W-1, kh*kw*c), each patch flattened as (row, col, channel): the kernel's (kh, kw, c) order
        patches = tf.image.extract_patches(x[i:i + 256], [1, kh, kw, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID")
        flat = patches.numpy().reshape(-1, kh * kw * c).astype(np.float64)
        cov += flat.T @ flat
        n += len(flat)
    cov /= n
    eigenvalues, eigenvectors = np.linalg.eigh(cov)  # ascending
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    filters = eigenvectors / np.sqrt(np.maximum(eigenvalues, 0.0) + WHITEN_EPS * eigenvalues.mean())
    kernel = np.concatenate([filters, -filters], axis=1).reshape(kh, kw, c, out)
    layer.kernel.assign(kernel.astype(np.float32))
    return (f"whitening stem: 2x2 patches of {len(x)} training images, eigenvalues "
            f"{eigenvalues[0]:.3g} .. {eigenvalues[-1]:.3g}")


def _inputs(input_shape: tuple[int, int, int]):
    inputs = keras.Input(shape=input_shape, name="image")
    return inputs, L.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(inputs)  # [0,255] -> [-1,1]


def build(input_shape: tuple[int, int, int], num_classes: int, cfg: ModelConfig) -> keras.Model:
    """Build ``cnn`` (module docstring).

    Args:
        input_shape: (H, W, C) with C = 3 (RGB) or 1 (grey), H and W >= 8; float32 pixels in [0, 255].
        num_classes: number of output classes.
        cfg: uses ``width`` (stem width w; blocks 2w, 8w, 8w), ``dropout``, ``logit_scale`` and ``stem``
            (``"whiten"``: :func:`whitening_stem` instead of the 3x3 stem; H and W shrink by one there).

    Returns:
        keras.Model: float32 (N, H, W, C) [0, 255] -> float32 (N, num_classes) probabilities.
    """
    w = cfg.width
    inputs, x = _inputs(input_shape)
    x = whitening_stem(x, input_shape[-1]) if cfg.stem == "whiten" else conv_bn_relu(x, w, "stem")
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

"""Recalibrate the BatchNorm statistics of a transfer model's base on the target images, keeping its function.

Why: ``--bn-batch-stats`` fine-tunes with BatchNorm in training mode (each batch normalised with its own
mean and variance). The MobileNetV2 weights in ``../shared/weights/`` have their BatchNorm folded into
the convolutions (moving mean 0, moving variance 1 - eps, gamma 1, beta = the folded bias), so batch
statistics would normalise activations that the weights never saw normalised: measured (session 25,
``mobilenet_v2``, 10,000 CIFAR-10 images), the fine-tune phase fell to chance (loss ln 10, top-1 0.10)
within 30 steps. Weights with real ImageNet statistics still carry ImageNet's statistics, not the target
data's (AdaBN, Li et al. 2016, "Revisiting batch normalization for practical domain adaptation",
recomputes them on the target domain).

Method: one pass in inference mode over the images measures the mean ``mu`` and variance ``var`` of
every BatchNorm input channel; then each BatchNorm gets moving mean ``mu``, moving variance ``var`` and
a scale and offset that keep its inference output unchanged:

    gamma' = gamma * sqrt(var + eps) / sqrt(v + eps)
    beta'  = beta + gamma * (mu - m) / sqrt(v + eps)        (m, v: the old moving mean and variance)

so ``gamma' (x - mu) / sqrt(var + eps) + beta' == gamma (x - m) / sqrt(v + eps) + beta`` for every ``x``.
The model's predictions do not change; a batch whose statistics are ``mu`` and ``var`` gives the same
output in training mode as in inference mode, so fine-tuning with batch statistics starts from the
pretrained function. Because the function is unchanged, the statistics of all layers come from one
pass (each layer sees the inputs the pretrained model gives it).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edgeclf._keras import keras, tf
from edgeclf.models.transfer import base_feed, base_model

L = keras.layers


def batchnorm_layers(model: keras.Model) -> list[L.BatchNormalization]:
    """The BatchNormalization layers of the model's nested ``keras.applications`` base, in graph order."""
    return [layer for layer in base_model(model).layers if isinstance(layer, L.BatchNormalization)]


def input_moments(model: keras.Model, batches: Iterable, max_images: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel mean and variance of every base BatchNorm's input, in inference mode.

    Args:
        model: a transfer model (:func:`edgeclf.models.transfer.build`).
        batches: image batches, float32 or uint8 (N, H, W, C) [0, 255] as the model takes them
            (numpy arrays or tensors; extra tuple elements such as labels are ignored).
        max_images: stop after this many images (> 0).

    Returns:
        BatchNorm layer name -> (mean, variance), float64 (channels,), over images x height x width.

    Raises:
        ValueError: ``batches`` holds no image, or a BatchNorm does not normalise the last axis.
    """
    base = base_model(model)
    bns = batchnorm_layers(model)
    for bn in bns:
        if list(bn.axis) not in ([-1], [len(bn.input.shape) - 1]):
            raise ValueError(f"{bn.name}: BatchNorm over axis {bn.axis}; only channels-last is supported")
    feed = base_feed(model)
    probe = keras.Model(base.inputs, [bn.input for bn in bns])

    @tf.function(input_signature=[tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)])
    def moments(x):
        outs = probe(feed(x, training=False), training=False)
        return [tf.nn.moments(o, [0, 1, 2]) for o in (outs if isinstance(outs, (list, tuple)) else [outs])]

    counts, per_batch = [], []  # per batch: n, [(mean, variance) per layer]
    seen = 0
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = tf.cast(x[: max_images - seen], tf.float32)
        n = int(x.shape[0])
        if n == 0:
            break
        counts.append(n)
        per_batch.append([(m.numpy().astype(np.float64), v.numpy().astype(np.float64)) for m, v in moments(x)])
        seen += n
        if seen >= max_images:
            break
    if not seen:
        raise ValueError("no images to recalibrate BatchNorm on")
    w = np.asarray(counts, np.float64) / seen
    out = {}
    for i, bn in enumerate(bns):  # pooled over batches: mean of means; mean of variances + variance of means
        means = np.stack([b[i][0] for b in per_batch])
        variances = np.stack([b[i][1] for b in per_batch])
        mean = w @ means
        out[bn.name] = (mean, w @ variances + w @ (means - mean) ** 2)
    return out


def recalibrate_batchnorm(model: keras.Model, batches: Iterable, max_images: int = 2048) -> int:
    """Give every BatchNorm of the model's base the moving statistics of ``batches``, output unchanged.

    See the module docstring for the method. Only the BatchNorm variables change (gamma, beta, moving
    mean and variance); the model's inference output stays the same up to float32 rounding.

    Args:
        model: a transfer model (:func:`edgeclf.models.transfer.build`).
        batches, max_images: as :func:`input_moments` (the first ``max_images`` images are used).

    Returns:
        The number of BatchNorm layers recalibrated.

    Raises:
        ValueError: as :func:`input_moments`; a BatchNorm without scale or offset (``scale=False`` or
            ``center=False``), whose output could not be kept unchanged.
    """
    bns = batchnorm_layers(model)
    for bn in bns:
        if bn.gamma is None or bn.beta is None:
            raise ValueError(f"{bn.name}: BatchNorm without scale or offset cannot be recalibrated")
    stats = input_moments(model, batches, max_images)
    for bn in bns:
        mu, var = stats[bn.name]
        eps = float(bn.epsilon)
        gamma, beta = bn.gamma.numpy().astype(np.float64), bn.beta.numpy().astype(np.float64)
        m, v = bn.moving_mean.numpy().astype(np.float64), bn.moving_variance.numpy().astype(np.float64)
        old = np.sqrt(v + eps)
        bn.gamma.assign((gamma * np.sqrt(var + eps) / old).astype(np.float32))
        bn.beta.assign((beta + gamma * (mu - m) / old).astype(np.float32))
        bn.moving_mean.assign(mu.astype(np.float32))
        bn.moving_variance.assign(var.astype(np.float32))
    return len(bns)

"""Test helper: give a transfer model's freshly built base usable BatchNorm statistics (no ImageNet
weights in tests)."""

from __future__ import annotations

import numpy as np

from edgeclf._keras import keras, tf
from edgeclf.models import transfer


def set_base_bn_stats(model, images: np.ndarray):
    """Set the BatchNorm moving statistics of ``model``'s base to the batch statistics of ``images``
    (float32 (N, H, W, C) [0, 255]), one training-mode pass, in place; the BatchNorms stay frozen.
    Returns ``model``."""
    base = transfer.base_model(model)
    base_input = transfer.base_feed(model)(images)
    bns = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for bn in bns:
        bn.trainable = True  # a non-trainable BatchNorm ignores training=True
    stats = keras.Model(base.inputs, [bn.input for bn in bns])(base_input, training=True)
    for bn, t in zip(bns, stats):
        bn.moving_mean.assign(tf.reduce_mean(t, axis=(0, 1, 2)))
        bn.moving_variance.assign(tf.math.reduce_variance(t, axis=(0, 1, 2)))
        bn.trainable = False
    return model

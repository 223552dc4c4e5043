"""Analytic multiply-accumulate (MAC) count of a Keras model, per image.

Counts Conv2D, DepthwiseConv2D and Dense layers (the arithmetic that dominates CNNs) and recurses
into nested models; element-wise ops, pooling and BatchNorm are ignored (they fold or are cheap).
FLOPs are reported as 2 x MACs, the usual convention (e.g. the MobileNetV2 paper counts
multiply-adds: ~300 M at 224 px).
"""

from __future__ import annotations

import numpy as np

from edgeclf._keras import keras


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates for one image through ``model`` (static shapes required)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            oh, ow, oc = layer.output.shape[1:4]
            total += oh * ow * oc * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            oh, ow, oc = layer.output.shape[1:4]
            ic = layer.input.shape[-1]
            total += oh * ow * oc * kh * kw * ic // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return int(total)

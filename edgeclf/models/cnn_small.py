"""``cnn-small``: the reference architecture of the original notebooks, kept for comparison.

Conv 32 -> 64 -> 128 (3x3 'valid') each followed by ReLU, BatchNorm and 2x2 MaxPool, Flatten,
Dense 128 + ReLU, Dropout 0.5, Dense N softmax: 161,098 parameters (160,650 trainable) and
5.1 M MACs per image at 32x32x3 with 10 classes.
Its ReLU -> BatchNorm order means BN cannot fold into the convolution, so its int8 exports keep
float BN ops (measured in the notebooks: its int8 ONNX is slower than fp32).
"""

from __future__ import annotations

from edgeclf._keras import keras
from edgeclf.models.config import ModelConfig

L = keras.layers


def build(input_shape: tuple[int, int, int], num_classes: int, cfg: ModelConfig) -> keras.Model:
    """Build ``cnn-small``: float32 (N, H, W, C) [0, 255] -> float32 (N, num_classes) probabilities.

    ``cfg`` is accepted for a uniform registry signature; the reference has fixed hyper-parameters.
    """
    del cfg
    inputs = keras.Input(shape=input_shape, name="image")
    x = L.Rescaling(1.0 / 255.0, name="normalize")(inputs)
    for i, f in enumerate((32, 64, 128)):
        x = L.Conv2D(f, 3, activation="relu", name=f"conv{i + 1}")(x)
        x = L.BatchNormalization(name=f"bn{i + 1}")(x)
        x = L.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(128, activation="relu", name="fc1")(x)
    x = L.Dropout(0.5, name="dropout")(x)
    x = L.Dense(num_classes, name="logits")(x)
    outputs = L.Activation("softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name="cnn_small")

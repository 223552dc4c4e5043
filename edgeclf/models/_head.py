"""The classifier head shared by the architectures (layer names are part of saved models)."""

from __future__ import annotations

from edgeclf._keras import keras

L = keras.layers


def classifier_head(x, num_classes: int, dropout: float, pool: str = "avg", logit_scale: float = 1.0):
    """Global pool (``"avg"`` or ``"max"``) -> dropout (if > 0) -> dense logits [-> x ``logit_scale``]
    -> float32 softmax probabilities (N, C).

    ``logit_scale`` != 1 multiplies the logits by a constant (a ``Rescaling`` layer named
    ``logit_scale``), as the 1/8 of Page (2018)'s ResNet-9 and the 1/9 of airbench94 (Jordan 2024):
    it shrinks the classifier's effective learning rate by ``logit_scale`` squared, which lets the
    convolutions train at a higher one."""
    x = (L.GlobalMaxPooling2D if pool == "max" else L.GlobalAveragePooling2D)(name="pool")(x)
    if dropout:
        x = L.Dropout(dropout, name="dropout")(x)
    x = L.Dense(num_classes, name="logits")(x)
    if logit_scale != 1.0:
        x = L.Rescaling(logit_scale, name="logit_scale")(x)
    return L.Activation("softmax", dtype="float32", name="probs")(x)

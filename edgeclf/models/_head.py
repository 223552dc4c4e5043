"""The classifier head shared by the architectures (layer names are part of saved models)."""

from __future__ import annotations

from edgeclf._keras import keras

L = keras.layers


def classifier_head(x, num_classes: int, dropout: float, pool: str = "avg"):
    """Global pool (``"avg"`` or ``"max"``) -> dropout (if > 0) -> dense logits -> float32 softmax
    probabilities (N, C)."""
    x = (L.GlobalMaxPooling2D if pool == "max" else L.GlobalAveragePooling2D)(name="pool")(x)
    if dropout:
        x = L.Dropout(dropout, name="dropout")(x)
    x = L.Dense(num_classes, name="logits")(x)
    return L.Activation("softmax", dtype="float32", name="probs")(x)

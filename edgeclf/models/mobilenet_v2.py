"""``mobilenet_v2``: MobileNetV2 (Sandler et al. 2018) transfer learning with a small head.

float32 (N, H, W, C) [0, 255] -> [grey repeated to 3 channels] -> bilinear resize to ``img_size``
-> ``x / 127.5 - 1`` (``keras.applications.mobilenet_v2.preprocess_input``) -> MobileNetV2 base
(``include_top=False``, always called with ``training=False`` so BatchNorm stays in inference mode)
-> global average pool -> dropout -> dense softmax.

The base is a nested model named ``mobilenetv2_*``; :func:`set_base_trainable` implements the
two-phase schedule (frozen base, then the last N layers trainable, BatchNorm always frozen: the
shared ImageNet weights have BN folded into identity-plus-bias, see shared/weights/README.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgeclf._keras import keras
from edgeclf.errors import WeightsError  # noqa: F401  (re-exported)
from edgeclf.models._head import classifier_head
from edgeclf.models.config import ModelConfig

L = keras.layers
log = logging.getLogger(__name__)


def _weights_arg(weights: str) -> str | None:
    if weights in ("none", "", None):
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"{weights}: weights file not found (use 'imagenet', 'none' or a path to an .h5 file)")
    return str(path)


def check_weights(weights: str) -> None:
    """Fail early (before any data is loaded) when ``weights`` names a file that does not exist.

    Raises:
        WeightsError: ``weights`` is neither ``imagenet``/``none`` nor an existing file.
    """
    _weights_arg(weights)


def build(input_shape: tuple[int, int, int], num_classes: int, cfg: ModelConfig) -> keras.Model:
    """Build ``mobilenet_v2``.

    Args:
        input_shape: (H, W, C), C = 3 or 1 (grey is repeated to 3 channels inside the model).
        num_classes: number of output classes.
        cfg: uses ``alpha``, ``img_size``, ``weights`` and ``dropout``.

    Returns:
        keras.Model: float32 (N, H, W, C) [0, 255] -> float32 (N, num_classes) probabilities.

    Raises:
        WeightsError: the weights file is missing, or the Keras ImageNet download failed.
    """
    s = cfg.img_size
    weights = _weights_arg(cfg.weights)
    try:
        base = keras.applications.MobileNetV2(input_shape=(s, s, 3), alpha=cfg.alpha, include_top=False,
                                              weights=weights)
    except Exception as exc:  # the Keras download raises many types offline
        if weights == "imagenet":
            raise WeightsError(
                f"mobilenet_v2: ImageNet weights could not be downloaded ({type(exc).__name__}); pass a local "
                "file with --weights PATH (e.g. ../shared/weights/mobilenet_v2_1.0_imagenet_no_top.h5)"
            ) from None
        raise WeightsError(f"{cfg.weights}: could not load MobileNetV2 weights: {exc}") from None
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if input_shape[2] == 1:
        x = L.Concatenate(name="grey_to_rgb")([x, x, x])
    if input_shape[:2] != (s, s):
        x = L.Resizing(s, s, interpolation="bilinear", name="resize")(x)
    x = L.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(x)
    x = base(x, training=False)
    outputs = classifier_head(x, num_classes, cfg.dropout)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


def base_model(model: keras.Model) -> keras.Model:
    """The nested MobileNetV2 base of a model built by :func:`build`.

    Raises:
        ValueError: ``model`` has no nested MobileNetV2.
    """
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name.startswith("mobilenetv2"):
            return layer
    raise ValueError(f"model {model.name!r} has no MobileNetV2 base")


def set_base_trainable(model: keras.Model, last_n_layers: int) -> int:
    """Freeze the base, then make its last ``last_n_layers`` layers trainable (-1 = all).

    BatchNormalization layers always stay frozen. Returns the number of trainable base layers.
    """
    base = base_model(model)
    base.trainable = True
    layers = base.layers
    start = 0 if last_n_layers < 0 else max(0, len(layers) - last_n_layers)
    n = 0
    for i, layer in enumerate(layers):
        trainable = i >= start and not isinstance(layer, L.BatchNormalization)
        layer.trainable = trainable
        n += trainable and bool(layer.weights)
    if last_n_layers == 0:
        base.trainable = False
    return n

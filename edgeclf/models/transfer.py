"""ImageNet transfer learning on a ``keras.applications`` base (tf_keras), one builder for every family.

Model graph (layer names are part of saved models; ``mobilenet_v2`` directories from earlier
edgeclf versions have exactly these):

    image float32 (N, H, W, C) RGB/grey [0, 255]
      -> grey_to_rgb  (Concatenate [x, x, x]; only when C = 1)
      -> resize       (bilinear Resizing to img_size x img_size; only when (H, W) differs)
      -> normalize    (the family's ImageNet preprocessing, see :func:`normalization_layer`;
                       absent for families whose base normalises itself: MobileNetV3, EfficientNetV2)
      -> base         (``keras.applications.<Family>(include_top=False)``, called with
                       ``training=False``: BatchNorm always in inference mode; without it for
                       ``--bn-batch-stats``, see :func:`build`)
      -> pool -> dropout -> logits -> probs   (:func:`edgeclf.models._head.classifier_head`)

Only standard, serialisable Keras layers are used (no Lambda, no custom layer), so ``model.keras``
loads in Keras' safe mode without registration. What differs between families is one row of
:data:`FAMILIES` (the Keras constructor) and the registered spec (``preprocessing``, ``options``,
recipe); everything else here is shared: :func:`build`, the nested-base finder :func:`base_model`,
the two-phase :func:`set_base_trainable` and the ``--weights`` check :func:`check_weights`.

Sources: Keras transfer-learning guide (https://keras.io/guides/transfer_learning/: freeze the base,
train the head, then fine-tune with BatchNorm in inference mode at a low learning rate);
``keras.applications.<family>.preprocess_input`` for each family's normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclf._keras import keras
from edgeclf.errors import WeightsError, one_line
from edgeclf.models._head import classifier_head
from edgeclf.models.config import ModelConfig
from edgeclf.models.registry import get_spec
from edgeclf.models.spec import Preprocessing

L = keras.layers

#: BatchNorm momentum of the base with ``bn_batch_stats`` (Keras' BatchNormalization default; the
#: applications build MobileNetV2 with 0.999, whose moving statistics average over ~1,000 steps).
BATCH_STATS_MOMENTUM = 0.99

#: ImageNet channel means in BGR order, in pixels (``imagenet_utils.preprocess_input`` "caffe" mode).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: ImageNet channel means and standard deviations in RGB order, as fractions of 255 ("torch" mode).
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Family:
    """How to make one family's base with ``keras.applications``.

    Attributes:
        application: the ``keras.applications`` constructor, e.g. ``"MobileNetV2"``.
        module: the ``keras.applications`` submodule holding its ``preprocess_input``.
        builtin_preprocessing: the base normalises raw [0, 255] pixels itself
            (``include_preprocessing=True``: its own Rescaling/Normalization layers), so the model
            adds no ``normalize`` layer; the spec's ``preprocessing`` then names what the base does.
    """

    application: str
    module: str
    builtin_preprocessing: bool = False


#: Registered model name -> its Keras family. ``alpha`` is passed when the spec lists it in ``options``.
FAMILIES: dict[str, Family] = {
    "mobilenet": Family("MobileNet", "mobilenet"),
    "mobilenet_v2": Family("MobileNetV2", "mobilenet_v2"),
    "mobilenet_v3_small": Family("MobileNetV3Small", "mobilenet_v3", builtin_preprocessing=True),
    "mobilenet_v3_large": Family("MobileNetV3Large", "mobilenet_v3", builtin_preprocessing=True),
    "efficientnetv2_b0": Family("EfficientNetV2B0", "efficientnet_v2", builtin_preprocessing=True),
    "resnet50": Family("ResNet50", "resnet50"),
    "vgg16": Family("VGG16", "vgg16"),
}


def weights_arg(weights: str | None) -> str | None:
    """``--weights`` value -> what ``keras.applications`` takes: None, ``"imagenet"`` or a file path.

    Raises:
        WeightsError: a path that is not an existing HDF5 file of Keras weights.
    """
    if weights in ("none", "", None):
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"{weights}: weights file not found (use 'imagenet', 'none' or a path to an .h5 file)")
    import h5py

    if not h5py.is_hdf5(path):
        raise WeightsError(f"{weights}: not an HDF5 weights file (expected the .h5 of the no-top base's save_weights)")
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in group.attrs:
            raise WeightsError(f"{weights}: an HDF5 file without Keras layer weights (expected save_weights .h5)")
    return str(path)


def check_weights(weights: str) -> None:
    """Fail early (before any data is loaded) on an unusable ``--weights``.

    Checks that a path names an existing HDF5 file of Keras weights; whether its layers fit the
    chosen base is only known when the model is built (:func:`build` raises ``WeightsError``).

    Raises:
        WeightsError: ``weights`` is neither ``imagenet``/``none`` nor such a file.
    """
    weights_arg(weights)


def normalization_layer(preprocessing: Preprocessing, name: str = "normalize") -> L.Layer:
    """One standard Keras layer computing ``preprocessing`` on float32 RGB [0, 255] (N, H, W, 3).

    * ``MINUS_ONE_TO_ONE``: ``Rescaling(1 / 127.5, offset=-1)`` (``mobilenet.preprocess_input``, "tf" mode).
    * ``ZERO_TO_ONE``: ``Rescaling(1 / 255)``.
    * ``CAFFE``: RGB -> BGR minus the ImageNet BGR mean (``resnet50``/``vgg16.preprocess_input``):
      a frozen 1x1 ``Conv2D`` whose kernel is the channel permutation and whose bias is the negative
      mean (a Lambda could do it in one line but Keras' safe mode refuses to load Lambda layers).
    * ``TORCH``: ``Normalization`` with mean ``255 x TORCH_MEAN_RGB`` and variance ``(255 x std)^2``,
      i.e. ``(x / 255 - mean) / std``.
    """
    if preprocessing is Preprocessing.MINUS_ONE_TO_ONE:
        return L.Rescaling(1.0 / 127.5, offset=-1.0, name=name)
    if preprocessing is Preprocessing.ZERO_TO_ONE:
        return L.Rescaling(1.0 / 255.0, name=name)
    if preprocessing is Preprocessing.TORCH:
        return L.Normalization(mean=[255.0 * m for m in TORCH_MEAN_RGB],
                               variance=[(255.0 * s) ** 2 for s in TORCH_STD_RGB], name=name)
    if preprocessing is Preprocessing.CAFFE:
        kernel = np.zeros((1, 1, 3, 3), np.float32)
        for out_c, in_c in enumerate((2, 1, 0)):  # output B, G, R <- input channels 2, 1, 0
            kernel[0, 0, in_c, out_c] = 1.0
        return L.Conv2D(3, 1, name=name, trainable=False,
                        kernel_initializer=keras.initializers.Constant(kernel.tolist()),
                        bias_initializer=keras.initializers.Constant([-m for m in CAFFE_MEAN_BGR]))
    raise ValueError(f"no normalization layer for {preprocessing}")


def _make_base(name: str, cfg: ModelConfig, weights: str | None):
    spec, family = get_spec(name), FAMILIES[name]
    kwargs = {"input_shape": (cfg.img_size, cfg.img_size, 3), "include_top": False, "weights": weights}
    if "alpha" in spec.options:
        kwargs["alpha"] = cfg.alpha
    if family.builtin_preprocessing:
        kwargs["include_preprocessing"] = True
    try:
        return getattr(keras.applications, family.application)(**kwargs)
    except Exception as exc:  # Keras downloads and h5 loading raise many types
        if weights == "imagenet":
            raise WeightsError(
                f"{name}: ImageNet weights could not be downloaded ({type(exc).__name__}: {one_line(exc)}); "
                "pass a local .h5 file of the no-top base's weights with --weights PATH") from None
        if weights is not None:
            raise WeightsError(f"{cfg.weights}: could not load {family.application} weights into {name} "
                               f"({type(exc).__name__}: {one_line(exc)})") from None
        raise


def build(input_shape: tuple[int, int, int], num_classes: int, cfg: ModelConfig) -> keras.Model:
    """Build the transfer-learning model registered as ``cfg.name`` (a key of :data:`FAMILIES`).

    Args:
        input_shape: (H, W, C), C = 3 RGB or 1 grey (repeated to 3 channels inside the model).
        num_classes: number of output classes.
        cfg: uses ``img_size``, ``weights``, ``dropout`` and, for families with a width multiplier,
            ``alpha``.

    Returns:
        keras.Model named ``cfg.name``: float32 (N, H, W, C) [0, 255] -> float32 (N, num_classes)
        probabilities. Its BatchNorm layers are non-trainable and run in inference mode; with
        ``cfg.bn_batch_stats`` the base is called without ``training=False`` and its BatchNorm
        momentum is :data:`BATCH_STATS_MOMENTUM`, so a BatchNorm made trainable later normalises
        with batch statistics while training.

    Raises:
        WeightsError: the weights file is missing or does not fit the base, or the ImageNet download failed.
    """
    spec, family = get_spec(cfg.name), FAMILIES[cfg.name]
    s = cfg.img_size
    base = _make_base(cfg.name, cfg, weights_arg(cfg.weights))
    for layer in base.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.trainable = False
            if cfg.bn_batch_stats:
                layer.momentum = BATCH_STATS_MOMENTUM
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if input_shape[2] == 1:
        x = L.Concatenate(name="grey_to_rgb")([x, x, x])
    if tuple(input_shape[:2]) != (s, s):
        x = L.Resizing(s, s, interpolation="bilinear", name="resize")(x)
    if not family.builtin_preprocessing:
        x = normalization_layer(spec.preprocessing)(x)
    # training=False pins every BatchNorm of the base to inference mode; without it a BatchNorm follows
    # its own trainable flag (Keras 2: a frozen BatchNorm always runs in inference mode)
    x = base(x) if cfg.bn_batch_stats else base(x, training=False)
    outputs = classifier_head(x, num_classes, cfg.dropout)
    return keras.Model(inputs, outputs, name=cfg.name)


def base_model(model: keras.Model) -> keras.Model:
    """The one nested ``keras.applications`` base of a model built by :func:`build`.

    Raises:
        ValueError: ``model`` has no nested model, or more than one.
    """
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"model {model.name!r} has {len(nested)} nested models, expected one pretrained base")
    return nested[0]


def set_base_trainable(model: keras.Model, last_n_layers: int, train_bn: bool = False) -> int:
    """Freeze the base, then make its last ``last_n_layers`` layers trainable (-1 = all, 0 = none).

    BatchNormalization layers run in inference mode whatever their flag (the base is called with
    ``training=False``), so their moving mean and variance never change. With ``train_bn`` the
    BatchNormalization layers among the last ``last_n_layers`` are trainable too: their scale and
    offset (gamma, beta) learn with the convolutions, as fastai's ``train_bn``. Without it they stay
    frozen. Layers outside the base (the head; a frozen ``normalize``) keep their own flags.
    Returns the number of trainable base layers that have weights.
    """
    base = base_model(model)
    base.trainable = True
    layers = base.layers
    start = 0 if last_n_layers < 0 else max(0, len(layers) - last_n_layers)
    n = 0
    for i, layer in enumerate(layers):
        trainable = i >= start and (train_bn or not isinstance(layer, L.BatchNormalization))
        layer.trainable = trainable
        n += trainable and bool(layer.weights)
    if last_n_layers == 0:
        base.trainable = False
    return n


def base_feed(model: keras.Model) -> keras.Model:
    """The layers of a model built by :func:`build` in front of its base, as a model.

    Returns:
        keras.Model: float32 (N, H, W, C) [0, 255] -> the tensor ``model`` feeds its base, float32
        (N, img_size, img_size, 3) (after grey_to_rgb, resize and normalize, where present).
    """
    base = base_model(model)
    return keras.Model(model.inputs, base.get_input_at(len(base.inbound_nodes) - 1))


def preprocessing_model(model: keras.Model) -> keras.Model:
    """The model's whole embedded preprocessing as a model: raw pixels -> what the base's first conv sees.

    The layers between the model input and the base (grey_to_rgb, resize, normalize), followed by the
    base's own leading Rescaling/Normalization layers (MobileNetV3, EfficientNetV2). For checking the
    preprocessing against ``keras.applications.<family>.preprocess_input``.

    Returns:
        keras.Model: float32 (N, H, W, C) [0, 255] -> float32 (N, img_size, img_size, 3).
    """
    x = base_feed(model).outputs[0]
    for layer in base_model(model).layers[1:]:
        if not isinstance(layer, (L.Rescaling, L.Normalization)):
            break
        x = layer(x)
    return keras.Model(model.inputs, x, name=f"{model.name}_preprocessing")

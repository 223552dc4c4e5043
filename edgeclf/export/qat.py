"""Quantization-aware training (tfmot) before int8 conversion.

A model that nests a functional sub-model (the ``keras.applications`` base of the transfer models,
e.g. ``mobilenet_v2``) is first flattened by :func:`edgeclf.export.flatten.flatten_model` (same
layer objects, the sub-model's graph inlined), because tfmot's ``quantize_apply`` cannot annotate
layers inside a nested model. Layers tfmot's default 8-bit registry supports (Conv2D,
DepthwiseConv2D, Dense, ReLU incl. ``max_value=6``, Add, ZeroPadding2D, pooling, ...) are annotated
and wrapped with fake-quant; the rest (``Rescaling``, ``Resizing``, ``Normalization``, a BatchNorm
not right after a conv) get a NoOp config and stay float, and the converter's post-training pass
quantizes them with the representative images. DepthwiseConv2D kernels are fake-quantized per
channel (:mod:`edgeclf.export.qat_depthwise`; tfmot's own scheme does them per tensor). Before
fine-tuning, one training-mode pass sets every range (:func:`_calibrate_ranges`). A pruned model
uses tfmot's prune-preserving scheme (PQAT) so fine-tuning keeps its zeros.

BatchNorm: tfmot does not fold BN into the conv while training; its Conv2D/DepthwiseConv2D +
BatchNorm (+ ReLU) transforms drop the fake-quant between the conv and its BN and quantize the BN
(or following ReLU) output instead; the kernel fake-quant acts on the unfolded kernel, and the
TFLite converter folds BN into the conv. Those transforms skip a BN that carries a QuantizeConfig,
so a BN right after a conv is annotated without one (:func:`batchnorms_after_conv`); until
2026-12 every BN got the NoOp config, which left a per-tensor fake-quant on the raw conv output
(before BN) and separate MUL/ADD ops in the int8 file. The transfer models' BN layers are
non-trainable, so they run in inference mode (frozen moving statistics, no gamma/beta update)
through QAT fine-tuning, as in training.

Sources: https://www.tensorflow.org/model_optimization/guide/quantization/training_comprehensive_guide ,
https://www.tensorflow.org/model_optimization/guide/combine/pqat_example
"""

from __future__ import annotations

import logging

import numpy as np

from edgeclf._keras import keras
from edgeclf.export.flatten import flatten_model
from edgeclf.export.prune import FineTune, _tfmot, fine_tune

log = logging.getLogger(__name__)


def _noop_config_class(qk):
    class NoOpQuantizeConfig(qk.QuantizeConfig):
        """Leave a layer tfmot can't quantize (Rescaling, Resizing) in float; the converter handles it."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    return NoOpQuantizeConfig


#: a DepthwiseConv2D kernel whose largest |weight| exceeds this many times its median per-channel
#: max |weight| would lose most channels to a per-tensor kernel quantization (see below)
DEPTHWISE_SPREAD_WARN = 8.0


def depthwise_spread(model) -> list[tuple[str, float, float]]:
    """(layer name, max |w| over the kernel, median over channels of max |w|) of every DepthwiseConv2D
    of ``model`` (nested models included) whose ratio exceeds :data:`DEPTHWISE_SPREAD_WARN`.

    Why: tfmot's default 8-bit scheme fake-quantizes DepthwiseConv2D kernels per tensor (one range
    for all channels: its per-axis quantizer covers the kernel's last axis, the depth multiplier),
    where the TFLite converter's post-training int8 uses one range per channel. Measured on the
    CIFAR-10 mobilenet_v2 (ImageNet weights, whose BatchNorm is already folded into the kernels:
    gamma 1, mean 0, variance 0.999): ``expanded_conv_depthwise`` spans +-56.45 while its median
    channel spans +-1.62, so the per-tensor step (0.44) leaves most channels a handful of levels; the
    QAT model started at 10 % top-1 (19 % after the range pass) against 90 % float on 300 test
    images. :func:`wrap_for_qat` now quantizes these kernels per channel
    (:mod:`edgeclf.export.qat_depthwise`), so :func:`quantize_aware` only logs them (info level).
    """
    out = []
    for layer in model.submodules:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            k = np.abs(layer.depthwise_kernel.numpy())
            top, median = float(k.max()), float(np.median(k.max(axis=(0, 1, 3))))
            if median > 0 and top / median > DEPTHWISE_SPREAD_WARN:
                out.append((layer.name, top, median))
    return out


#: the layer classes tfmot's Conv+BatchNorm layout transforms fold a following BatchNorm into
#: (``default_8bit_transforms.Conv2DBatchNormQuantize`` and its ReLU / Activation variants)
_FOLDING_CONVS = ("Conv2D", "DepthwiseConv2D")
_BATCHNORMS = ("BatchNormalization", "SyncBatchNormalization")


def batchnorms_after_conv(model) -> set[str]:
    """Names of the BatchNormalization layers of the functional ``model`` (no nested models) that
    tfmot's Conv+BatchNorm transforms handle: the BN's only input is the output of a Conv2D or
    DepthwiseConv2D with a linear activation, consumed by nothing else (tfmot's pattern; read from
    ``model.get_config()``, as tfmot's ModelTransformer does, so a layer shared with another model
    does not count that model's calls).

    Such a BN must be annotated *without* a QuantizeConfig: the transforms then drop the conv's
    output fake-quant and quantize after the BN (or its ReLU), as the converter folds BN into the
    conv. A BN annotated with any config (the NoOp one) makes the transforms skip the pair.
    Source: tensorflow_model_optimization 0.8.1 ``default_8bit_transforms.py``.
    """
    cfg = model.get_config()
    by_name = {layer["name"]: layer for layer in cfg["layers"]}
    consumers: dict[str, int] = {}
    for layer in cfg["layers"]:
        for node in layer["inbound_nodes"]:
            for inbound in node:
                consumers[inbound[0]] = consumers.get(inbound[0], 0) + 1
    for out in cfg["output_layers"]:
        consumers[out[0]] = consumers.get(out[0], 0) + 1
    found = set()
    for layer in cfg["layers"]:
        nodes = layer["inbound_nodes"]
        if layer["class_name"] not in _BATCHNORMS or len(nodes) != 1 or len(nodes[0]) != 1:
            continue
        src = by_name[nodes[0][0][0]]
        if (src["class_name"] in _FOLDING_CONVS and src["config"].get("activation") == "linear"
                and consumers.get(src["name"]) == 1):
            found.add(layer["name"])
    return found


#: images of the one training-mode pass that sets the activation ranges before fine-tuning
CALIBRATION_IMAGES = 128


def _calibrate_ranges(qat, images) -> None:
    """Set every activation quantizer's range of ``qat`` to what it sees on ``images`` (float32
    (N, H, W, C) [0, 255]), in one training-mode pass.

    tfmot starts each activation range at [-6, 6] and moves it by an exponential moving average with
    decay 0.999 per training step, so after a short fine-tune (hundreds of steps) the ranges are
    still mostly the initial ones: ReLU outputs use half the int8 levels, wider tensors (residual
    Adds, up to +-15 in MobileNetV2) are clipped. Measured on a tiny mobilenet_v2 after 4 steps: all
    ranges within 0.03 of +-6. The pass runs with decay 0 (the range = the batch's min / max,
    still including 0); fine-tuning then continues the moving average from there.
    """
    from unittest import mock

    from tensorflow_model_optimization.python.core.quantization.keras import quantizers

    moving_avg = quantizers.quant_ops.MovingAvgQuantize

    def batch_range(*args, **kwargs):
        return moving_avg(*args, **{**kwargs, "ema_decay": 0.0})

    with mock.patch.object(quantizers.quant_ops, "MovingAvgQuantize", batch_range):
        qat(np.asarray(images, np.float32), training=True)


def wrap_for_qat(model, preserve_sparsity: bool = False, per_channel_depthwise: bool = True):
    """The fake-quant (QAT) model of ``model``, ranges not yet set (returns a new tf_keras model;
    ``model`` is not changed: tfmot clones it).

    Steps: flatten nested sub-models (:func:`edgeclf.export.flatten.flatten_model`); annotate every
    layer tfmot's default 8-bit registry supports, every BatchNorm that follows a conv
    (:func:`batchnorms_after_conv`: tfmot folds it, no fake-quant between conv and BN) without a
    config, and the rest (``Rescaling``, ``Resizing``, other BatchNorms) with a NoOp config (stays
    float; the converter's post-training pass quantizes it); ``quantize_apply`` with
    :func:`edgeclf.export.qat_depthwise.quantize_scheme`: DepthwiseConv2D kernels per channel
    (``per_channel_depthwise=False``: tfmot's own per-tensor depthwise, for comparison), and the
    prune-preserving scheme when ``preserve_sparsity``.

    Raises:
        ConfigError: the model nests a sub-model that cannot be flattened.
        ImportError: tensorflow-model-optimization is not installed.
    """
    tfmot = _tfmot()
    qk = tfmot.quantization.keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    from edgeclf.export import qat_depthwise

    model = flatten_model(model)  # tfmot cannot annotate the layers of a nested model (the transfer base)
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
    noop = _noop_config_class(qk)
    folded = batchnorms_after_conv(model)

    def annotate(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        if registry.supports(layer) or layer.name in folded:
            return qk.quantize_annotate_layer(layer)
        return qk.quantize_annotate_layer(layer, quantize_config=noop())  # stays float (e.g. Rescaling)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    with qk.quantize_scope({noop.__name__: noop, **qat_depthwise.CUSTOM_OBJECTS}):
        # PQAT: the Conv2D/Dense weight quantizers multiply the kernels by their zero masks
        return qk.quantize_apply(annotated, scheme=qat_depthwise.quantize_scheme(preserve_sparsity,
                                                                                per_channel_depthwise))


def quantize_aware(model, ft: FineTune, epochs: int, preserve_sparsity: bool):
    """Wrap ``model`` for QAT (:func:`wrap_for_qat`), set the activation ranges
    (:func:`_calibrate_ranges`), fine-tune ``epochs`` epochs, return the QAT model (convert with the
    TFLite converter).

    ``preserve_sparsity`` (a pruned ``model``): prune-preserving QAT (PQAT) with
    ``tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme`` (per-channel depthwise
    subclass): the Conv2D/Dense weight
    quantizers multiply each kernel by its zero mask (taken from the kernel when the layer is wrapped),
    so the zeros of pruning stay zero through fine-tuning, BN folding and int8 conversion. Plain QAT
    would let them drift away from zero. ``ft.lr`` is the peak rate (:func:`edgeclf.export.prune.qat_lr`).

    A model with nested sub-models (the transfer models' base) is flattened first
    (:func:`edgeclf.export.flatten.flatten_model`); ``model`` itself is not changed (tfmot clones it).

    Raises:
        ConfigError: the model nests a sub-model that cannot be flattened (subclassed, called with
            extra arguments, or holding a trainable BatchNorm while called with ``training=False``).
    """
    spread = depthwise_spread(model)
    if spread:
        name, top, median = max(spread, key=lambda r: r[1] / r[2])
        log.info("[export] --qat: %d DepthwiseConv2D kernel(s) have channels far narrower than the kernel's range "
                 "(worst: %s, max |w| %.2f, median channel %.2f); they are fake-quantized per channel, as the "
                 "converter quantizes them.", len(spread), name, top, median)
    qat = wrap_for_qat(model, preserve_sparsity)
    _calibrate_ranges(qat, ft.train.sample(min(CALIBRATION_IMAGES, len(ft.train)), ft.seed)[0])
    fine_tune(qat, ft, epochs, [])
    return qat

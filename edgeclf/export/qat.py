"""Quantization-aware training (tfmot) before int8 conversion.

Layers tfmot's default 8-bit registry supports are annotated and wrapped with fake-quant; the rest
(``Rescaling``, ``Resizing``) stay float and are quantized by the converter's post-training pass
with the representative images. A pruned model uses ``Default8BitPrunePreserveQuantizeScheme``
(prune-preserving QAT, PQAT) so fine-tuning keeps its zeros. Nested models (MobileNetV2's base) are
not supported by tfmot's QAT and are refused with a clear message.

Sources: https://www.tensorflow.org/model_optimization/guide/quantization/training_comprehensive_guide ,
https://www.tensorflow.org/model_optimization/guide/combine/pqat_example
"""

from __future__ import annotations

from edgeclf._keras import keras
from edgeclf.errors import ConfigError
from edgeclf.export.prune import FineTune, _tfmot, fine_tune


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


def quantize_aware(model, ft: FineTune, epochs: int, preserve_sparsity: bool):
    """Wrap ``model`` for QAT, fine-tune ``epochs`` epochs, return the QAT model (convert with the TFLite converter).

    ``preserve_sparsity`` (a pruned ``model``): prune-preserving QAT (PQAT) with
    ``tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme``: the Conv2D/Dense weight
    quantizers multiply each kernel by its zero mask (taken from the kernel when the layer is wrapped),
    so the zeros of pruning stay zero through fine-tuning, BN folding and int8 conversion. Plain QAT
    would let them drift away from zero. ``ft.lr`` is the peak rate (:func:`edgeclf.export.prune.qat_lr`).

    Raises:
        ConfigError: the model nests another model (tfmot QAT cannot handle it).
    """
    tfmot = _tfmot()
    qk = tfmot.quantization.keras
    if any(isinstance(layer, keras.Model) for layer in model.layers):
        raise ConfigError(f"--qat: model '{model.name}' contains a nested model, which tfmot QAT does not support "
                         "(use post-training int8 without --qat)")
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()

    noop = _noop_config_class(qk)

    def annotate(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        if registry.supports(layer):
            return qk.quantize_annotate_layer(layer)
        return qk.quantize_annotate_layer(layer, quantize_config=noop())  # stays float (e.g. Rescaling)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    with qk.quantize_scope({noop.__name__: noop}):
        if preserve_sparsity:  # PQAT: the weight quantizers multiply the kernels by their zero masks
            qat = qk.quantize_apply(annotated, scheme=tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
        else:
            qat = qk.quantize_apply(annotated)
    fine_tune(qat, ft, epochs, [])
    return qat

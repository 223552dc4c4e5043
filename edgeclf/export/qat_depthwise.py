"""Per-channel fake-quant of DepthwiseConv2D kernels for tfmot QAT.

tfmot 0.8.1's default 8-bit registry gives DepthwiseConv2D the Conv2D config
(``Default8BitConvQuantizeConfig``, ``LastValueQuantizer(per_axis=True)``), whose range variables
cover the kernel's **last** axis. A Keras depthwise kernel is (kh, kw, in_channels,
depth_multiplier), so the last axis is the multiplier (1 in MobileNet): one range for all
channels, i.e. per-tensor (tfmot issue #808). The TFLite converter's post-training int8 and its
int8 DEPTHWISE_CONV_2D kernel (1, kh, kw, in_channels * multiplier) are per channel over that
last axis (quantized_dimension 3).

:class:`PerChannelDepthwiseQuantizer` reshapes the kernel to (kh, kw, 1, in_channels * multiplier)
(output channel ``c * multiplier + m``, the order of TF's depthwise output and of the TFLite
kernel), fake-quantizes it with tfmot's ``LastValueQuantize(per_channel=True)`` (8 bits,
symmetric, narrow range [-127, 127], as the Conv2D kernels) and reshapes back. The TFLite
converter turns it into per-channel int8 depthwise weights (``tests/test_qat_depthwise.py``).

The quantizer is installed through the registry of a quantize scheme (:func:`quantize_scheme`),
not through ``quantize_annotate_layer(..., quantize_config=...)``: tfmot's Conv+BatchNorm(+ReLU)
layout transforms skip any layer carrying a custom config, so a per-layer config would put a
fake-quant between the depthwise conv and its BatchNorm.

Sources: tensorflow_model_optimization 0.8.1 ``default_8bit_quantize_registry.py``,
``default_8bit_quantizers.py``, ``quant_ops.py`` (``LastValueQuantize`` reduces over axes 0, 1, 2
of a 4-D input); https://github.com/tensorflow/model-optimization/issues/808 ;
https://www.tensorflow.org/lite/performance/quantization_spec (DEPTHWISE_CONV_2D: per-axis
weights, quantized_dimension 3).
"""

from __future__ import annotations

from edgeclf._keras import keras, tf
from edgeclf.export.prune import _tfmot

_tfmot()  # a readable ImportError when tensorflow-model-optimization is missing
# (tfmot has no public path for the 8-bit registry / schemes; these are the modules its public
# quantize_apply uses)
from tensorflow_model_optimization.python.core.quantization.keras import quantizers  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (  # noqa: E402
    default_8bit_prune_preserve_quantize_scheme as pqat_scheme,
)
from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (  # noqa: E402
    prune_preserve_quantize_registry as pqat_registry,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_registry as registry_8bit,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_scheme as scheme_8bit,
)


class PerChannelDepthwiseQuantizer(quantizers.LastValueQuantizer):
    """8-bit symmetric narrow-range fake-quant of a (kh, kw, C, M) depthwise kernel with one range
    per output channel (C * M ranges), each the channel's last-seen max |w| (training-mode calls).

    Range variables ``<name>_min`` / ``<name>_max``: float32 (C * M,), initialized to -6 / 6 as
    tfmot's, set by the first training-mode call (``qat._calibrate_ranges`` makes one).

    Raises:
        ValueError: (at build) the kernel is not 4-D with known channel dimensions.
    """

    def __init__(self):
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

    @staticmethod
    def _channels(shape) -> int:
        shape = tf.TensorShape(shape)
        if shape.rank != 4 or shape[2] is None or shape[3] is None:
            raise ValueError(f"a depthwise kernel is (kh, kw, in_channels, depth_multiplier), got {shape}")
        return int(shape[2]) * int(shape[3])

    def build(self, tensor_shape, name, layer):
        n = self._channels(tensor_shape)
        return {key: layer.add_weight(f"{name}_{suffix}", shape=(n,), trainable=False,
                                      initializer=keras.initializers.Constant(value))
                for key, suffix, value in (("min_var", "min", -6.0), ("max_var", "max", 6.0))}

    def __call__(self, inputs, training, weights, **kwargs):
        kh, kw, c, m = inputs.shape
        flat = tf.reshape(inputs, (kh, kw, 1, c * m))  # channel c * m + mi: TF's / TFLite's output order
        return tf.reshape(super().__call__(flat, training, weights, **kwargs), (kh, kw, c, m))

    def get_config(self):
        return {}

    def __eq__(self, other):
        return isinstance(other, PerChannelDepthwiseQuantizer)

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = None


class PerChannelDepthwiseQuantizeConfig(registry_8bit.Default8BitQuantizeConfig):
    """tfmot's DepthwiseConv2D config (output activation: 8-bit asymmetric moving-average range)
    with :class:`PerChannelDepthwiseQuantizer` on ``depthwise_kernel``."""

    def __init__(self, weight_attrs=("depthwise_kernel",), activation_attrs=("activation",), quantize_output=False):
        super().__init__(list(weight_attrs), list(activation_attrs), quantize_output)
        self.weight_quantizer = PerChannelDepthwiseQuantizer()


class _PerChannelDepthwiseMixin:
    """Put before a tfmot registry class: DepthwiseConv2D layers get a new
    :class:`PerChannelDepthwiseQuantizeConfig`, every other layer the registry's own config."""

    def get_quantize_config(self, layer):
        if type(layer) is keras.layers.DepthwiseConv2D:
            return PerChannelDepthwiseQuantizeConfig()
        return super().get_quantize_config(layer)


class PerChannelDepthwiseRegistry(_PerChannelDepthwiseMixin, registry_8bit.Default8BitQuantizeRegistry):
    """tfmot's default 8-bit registry, DepthwiseConv2D kernels per channel (a new config per layer)."""


class PerChannelDepthwisePrunePreserveRegistry(_PerChannelDepthwiseMixin,
                                               pqat_registry.Default8bitPrunePreserveQuantizeRegistry):
    """tfmot's prune-preserving 8-bit registry (which does not mask-preserve DepthwiseConv2D), with
    DepthwiseConv2D kernels per channel."""


class PerChannelDepthwiseScheme(scheme_8bit.Default8BitQuantizeScheme):
    """``Default8BitQuantizeScheme`` (same layout transforms) with :class:`PerChannelDepthwiseRegistry`."""

    def get_quantize_registry(self):
        return PerChannelDepthwiseRegistry()


class PerChannelDepthwisePrunePreserveScheme(pqat_scheme.Default8BitPrunePreserveQuantizeScheme):
    """``Default8BitPrunePreserveQuantizeScheme`` with :class:`PerChannelDepthwisePrunePreserveRegistry`."""

    def get_quantize_registry(self):
        return PerChannelDepthwisePrunePreserveRegistry()


def quantize_scheme(preserve_sparsity: bool, per_channel_depthwise: bool = True):
    """The tfmot ``QuantizeScheme`` for ``quantize_apply``: tfmot's default 8-bit scheme, or its
    prune-preserving one (``preserve_sparsity``), with DepthwiseConv2D kernels per channel unless
    ``per_channel_depthwise`` is False (tfmot's own scheme, per tensor: for comparison)."""
    tfmot = _tfmot()
    if preserve_sparsity:
        return PerChannelDepthwisePrunePreserveScheme() if per_channel_depthwise else \
            tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    return PerChannelDepthwiseScheme() if per_channel_depthwise else scheme_8bit.Default8BitQuantizeScheme()


#: what ``tfmot.quantization.keras.quantize_scope`` needs to clone / deserialize a QAT model with these
CUSTOM_OBJECTS = {cls.__name__: cls for cls in (PerChannelDepthwiseQuantizer, PerChannelDepthwiseQuantizeConfig)}

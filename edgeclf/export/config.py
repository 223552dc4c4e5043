"""``ExportConfig``: what ``edgeclf export`` makes, validated once (no TensorFlow here).

Contradictory options are refused with a one-line :class:`~edgeclf.errors.ConfigError`; nothing is
silently rewritten. ``Format`` and ``Precision`` live in :mod:`edgeclf.runtime.manifest` (the runtime
reads them too) and are re-exported here.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from edgeclf.errors import ConfigError
from edgeclf.runtime.manifest import DEFAULT_ARTIFACTS, Format, Precision

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


class TfliteInt8Quantizer(str, enum.Enum):
    """Which tool makes the full-integer int8 TFLite file (see docs/export.md for the comparison)."""

    CONVERTER = "converter"            # tf.lite.TFLiteConverter post-training quantization
    AI_EDGE_QUANTIZER = "ai-edge-quantizer"  # ai_edge_quantizer static_wi8_ai8 recipe on the fp32 .tflite


class Int8Io(str, enum.Enum):
    """Input/output tensor type of the full-integer int8 ``.tflite`` file (``--int8-io``).

    uint8 is what MediaPipe Tasks, the TFLite Task Library, Android and Coral Edge TPU pipelines feed
    (camera pixels as they are); int8 is the converter's symmetric-friendly choice (zero point -128);
    float32 keeps float I/O with quantize/dequantize ops inside the model.
    """

    UINT8 = "uint8"
    INT8 = "int8"
    FLOAT32 = "float32"


class OnnxInt8Recipe(str, enum.Enum):
    """How the int8 ONNX file is made (``--onnx-int8``; docs/quantization.md compares them).

    All but ``from-tflite`` are onnxruntime ``quantize_static`` in QDQ format with per-channel int8
    weights (activations x weights, ``reduce_range`` = 7-bit weights); ``auto`` picks one per
    int8 kernel class of the export CPU (:func:`choose_onnx_recipe`).
    """

    AUTO = "auto"
    U8S8 = "u8s8"                            # uint8 activations, int8 weights
    U8S8_REDUCE_RANGE = "u8s8-reduce-range"  # the same with 7-bit weights: no VPMADDUBSW saturation anywhere
    S8S8 = "s8s8"                            # int8 activations and weights (onnxruntime's default types)
    U8U8 = "u8u8"                            # uint8 activations and weights: exact U8U8 kernels on x86, slower
    FROM_TFLITE = "from-tflite"              # tf2onnx conversion of the int8 TFLite file, int8 graph I/O


#: Kept for callers of the round-1 name.
OnnxInt8Path = OnnxInt8Recipe

#: ``auto``: onnxruntime's own advice per CPU (``quantize_static`` docstring, "Choosing parameters
#: for CPU inference"): x86 without VNNI -> U8S8 + reduce_range; x86 with VNNI -> U8S8; ARM -> S8S8.
#: CPUs edgeclf cannot classify get the recipe that cannot saturate on any kernel.
AUTO_ONNX_RECIPE: dict[str, OnnxInt8Recipe] = {
    "x86-no-vnni": OnnxInt8Recipe.U8S8_REDUCE_RANGE,
    "x86-vnni": OnnxInt8Recipe.U8S8,
    "arm64": OnnxInt8Recipe.S8S8,
    "x86-sse": OnnxInt8Recipe.U8S8_REDUCE_RANGE,
    "other": OnnxInt8Recipe.U8S8_REDUCE_RANGE,
}


def choose_onnx_recipe(recipe: OnnxInt8Recipe, kernel_class: str) -> OnnxInt8Recipe:
    """The concrete recipe for ``recipe`` on a CPU of int8 ``kernel_class`` (an
    :class:`~edgeclf.runtime.cpu.Int8KernelClass` value); anything but AUTO is returned as given."""
    if recipe is not OnnxInt8Recipe.AUTO:
        return recipe
    return AUTO_ONNX_RECIPE.get(kernel_class, OnnxInt8Recipe.U8S8_REDUCE_RANGE)


#: (format, precision) pairs that have an exporter (the registry in registry.py implements exactly
#: these). Today every supported pair is also made by default.
SUPPORTED: frozenset[tuple[Format, Precision]] = frozenset(DEFAULT_ARTIFACTS)

#: Formats written when none are asked for (``--formats`` default), in table order.
DEFAULT_FORMATS: tuple[Format, ...] = tuple(dict.fromkeys(f for f, _ in DEFAULT_ARTIFACTS))

#: Precisions made when none are asked for, per format.
DEFAULT_PRECISIONS: dict[Format, tuple[Precision, ...]] = {
    fmt: tuple(p for f, p in DEFAULT_ARTIFACTS if f is fmt) for fmt in DEFAULT_FORMATS
}


#: How calibration images are drawn from the training split (:attr:`ExportConfig.calibration_sampling`).
CALIBRATION_SAMPLING = ("stratified", "random")
FALLBACK_RANKINGS = ("snr", "measured")   # --fallback-ranking; edgeclf.export.fallback
#: ``--qat-distill`` default: the weight of distillation from the float model in QAT fine-tuning
#: (docs/quantization.md has the measurement behind it).
QAT_DISTILL_DEFAULT = 1.0
#: ``edgeclf export --auto-qat-above`` default (:attr:`ExportConfig.auto_qat_above_pp`): the int8 accuracy
#: target, in top-1 percentage points below the float model, past which QAT is tried even inside the gate.
AUTO_QAT_ABOVE_DEFAULT = 0.3


def _parse_choices(text: str, enum, flag: str, choices: str, aliases: dict[str, str]) -> tuple:
    """Comma list -> de-duplicated tuple of ``enum`` members, in order. Raises ConfigError naming ``flag``."""
    out: list = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        try:
            member = enum(aliases.get(part, part))
        except ValueError:
            raise ConfigError(f"{flag}: unknown value {part!r} (choose from {choices})") from None
        if member not in out:
            out.append(member)
    if not out:
        raise ConfigError(f"{flag}: empty list")
    return tuple(out)


def parse_precisions(text: str) -> tuple[Precision, ...]:
    """``"none,int8"`` -> (FP32, INT8). ``none``/``fp32`` both mean FP32. Raises ConfigError on unknown names."""
    return _parse_choices(text, Precision, "--quantize", "none, fp16, dynamic, int8", {"none": "fp32"})


def parse_formats(text: str) -> tuple[Format, ...]:
    """``"tflite,onnx"`` -> (TFLITE, ONNX). Raises ConfigError on unknown names."""
    return _parse_choices(text, Format, "--formats", "tflite, onnx", {})


@dataclass(frozen=True)
class ExportConfig:
    """Everything ``export_model`` needs besides the model directory.

    Raises ConfigError on construction if a value is out of range or options contradict each other.

    Attributes:
        formats: artifact formats to write.
        precisions: precisions to make; None = :data:`DEFAULT_PRECISIONS` per format. Pairs a format
            does not support (e.g. ONNX fp16) are skipped with a log line; a precision no chosen
            format supports is an error.
        prune_sparsity: target fraction of zero weights in Conv/Dense kernels, 0 = no pruning, < 1.
        prune_epochs: fine-tuning epochs while pruning (PolynomialDecay 0 -> target).
        qat: quantization-aware training before int8 conversion (needs INT8 among ``precisions``).
        qat_epochs: fine-tuning epochs of the QAT model; None = per model
            (:func:`edgeclf.export.prune.qat_epochs_for`: 2 after ``--train-bn`` fine-tuning, else 1).
        qat_if_gate_fails: ``--auto-qat`` (on by default): when a post-training int8 artifact
            fails the accuracy gate (and ``allow_drop`` is off), run quantization-aware training once
            and make the failing int8 files again from the QAT model (``model_qat_int8.*``), so a
            plain ``edgeclf export`` ends with int8 files that pass where QAT can get them there.
            Measured on the CIFAR-10 ``mobilenet_v2 --train-bn`` (README): post-training int8 lost
            1.09 points, after one QAT epoch 0.17. Ignored with ``qat`` (QAT always) or without int8.
        auto_qat_above_pp: with ``qat_if_gate_fails``, also run that QAT for post-training int8 files
            that passed the gate but lost more than this many percentage points (``--auto-qat-above``;
            the CLI's default is 0.3, the accuracy target of int8 here); of each such pair the file
            with the smaller drop is kept and the other deleted and dropped from the manifest. None
            (the Python default) = QAT only on gate failures. Measured on the 12-epoch CIFAR-10
            ``mobilenet_v2`` (README): post-training int8 lost 0.83 (TFLite) and 0.90 points (ONNX),
            inside the 1-point gate.
        qat_distill: weight ``alpha`` in [0, 1] of knowledge distillation from the float model in the QAT
            fine-tuning loss (Hinton et al. 2015, temperature 1, the float model's outputs on each
            augmented batch; the rest is cross-entropy on the labels); 0 = labels only. The float
            model is the teacher before pruning, so ``--prune --qat`` distils from the unpruned model.
        fine_tune_lr: peak learning rate of pruning and QAT fine-tuning (cosine-decayed to 0); None =
            learning-rate rewinding for pruning and 10 % of the training's last-phase peak for QAT
            (:func:`edgeclf.export.prune.rewound_lr`, :func:`edgeclf.export.prune.qat_lr`).
        calibration_samples: representative training images for int8 calibration.
        calibration_sampling: how they are drawn from the training split: ``"stratified"`` (each
            class its share) or ``"random"`` (uniform; kept for the calibration study).
        data: dataset source overriding the model directory's config.json (None = the same data).
        max_accuracy_drop_pp: an artifact whose test top-1 is more than this many percentage points
            below the float Keras model fails the export.
        allow_drop: record such artifacts with status "validation failed" instead of failing.
        val_samples: test images used for validation (stratified subset); None = the whole test split.
        tflite_int8: the int8 TFLite quantizer.
        int8_io: input/output type of the int8 ``.tflite`` file (the int8 ONNX keeps int8 I/O).
        onnx_int8: the int8 ONNX recipe (``auto``: :func:`choose_onnx_recipe` for the export CPU).
        quant_report: write a per-layer quantization error report (CSV + PNG) for each int8 artifact.
        fallback: when an int8 artifact fails the accuracy gate, keep its most sensitive layers
            in float, one more at a time, until it passes or ``fallback_max_layers`` layers are
            float; if none passes, the attempt (or the all-int8 file) with the smallest drop is kept.
        fallback_max_layers: the limit of ``fallback``.
        fallback_ranking: the order ``fallback`` adds layers in: ``"snr"`` (lowest SNR in the quant
            report first; no extra conversion) or ``"measured"`` (the top ``fallback_max_layers`` SNR
            layers each tried alone in float, smallest drop first: that many more conversions and
            validation passes). See :mod:`edgeclf.export.fallback`.
        batch_size: fine-tuning batch size (pruning, QAT); None = the training run's batch size.
        seed: seed for sampling and fine-tuning.
    """

    formats: tuple[Format, ...] = DEFAULT_FORMATS
    precisions: tuple[Precision, ...] | None = None
    prune_sparsity: float = 0.0
    prune_epochs: int = 2
    qat: bool = False
    qat_epochs: int | None = None
    qat_if_gate_fails: bool = True
    auto_qat_above_pp: float | None = None
    qat_distill: float = QAT_DISTILL_DEFAULT
    fine_tune_lr: float | None = None
    calibration_samples: int = 500
    calibration_sampling: str = "stratified"
    data: str | None = None
    max_accuracy_drop_pp: float = 1.0
    allow_drop: bool = False
    val_samples: int | None = None
    tflite_int8: TfliteInt8Quantizer = TfliteInt8Quantizer.CONVERTER
    int8_io: Int8Io = Int8Io.UINT8
    onnx_int8: OnnxInt8Recipe = OnnxInt8Recipe.AUTO
    quant_report: bool = False
    fallback: bool = False
    fallback_max_layers: int = 8
    fallback_ranking: str = "snr"
    batch_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.formats:
            raise ConfigError("no export format given")
        if not 0.0 <= self.prune_sparsity < 1.0:
            raise ConfigError(f"--prune must be in [0, 1), got {self.prune_sparsity}")
        if self.prune_sparsity and self.prune_epochs < 1:
            raise ConfigError("--prune needs --prune-epochs >= 1 (pruning happens during fine-tuning)")
        if self.calibration_samples < 1:
            raise ConfigError(f"--calibration-images must be >= 1, got {self.calibration_samples}")
        if self.calibration_sampling not in CALIBRATION_SAMPLING:
            raise ConfigError(f"--calibration-sampling must be one of {', '.join(CALIBRATION_SAMPLING)}, "
                              f"got {self.calibration_sampling!r}")
        if self.fine_tune_lr is not None and not self.fine_tune_lr > 0:
            raise ConfigError(f"--fine-tune-lr must be > 0, got {self.fine_tune_lr}")
        if self.val_samples is not None and self.val_samples < 1:
            raise ConfigError(f"--val-samples must be >= 1, got {self.val_samples}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.qat and Precision.INT8 not in self.resolved_precisions():
            raise ConfigError("--qat trains for int8 but int8 is not among the --quantize precisions "
                             "(contradictory options: add int8 or drop --qat)")
        if self.tflite_int8 is TfliteInt8Quantizer.AI_EDGE_QUANTIZER and self.int8_io is not Int8Io.INT8:
            raise ConfigError(f"--tflite-int8 ai-edge-quantizer writes int8 input/output only, not "
                              f"--int8-io {self.int8_io.value} (add --int8-io int8)")
        int8 = Precision.INT8 in self.resolved_precisions()
        for flag, on in (("--quant-report", self.quant_report), ("--fallback", self.fallback)):
            if on and not int8:
                raise ConfigError(f"{flag} works on int8 artifacts but int8 is not among the --quantize precisions")
            if on and self.qat:
                raise ConfigError(f"{flag} is for post-training quantization, not --qat models")
            if on and self.tflite_int8 is TfliteInt8Quantizer.AI_EDGE_QUANTIZER and Format.TFLITE in self.formats:
                raise ConfigError(f"{flag} uses the TFLite converter's QuantizationDebugger, not --tflite-int8 "
                                  "ai-edge-quantizer")
        if self.fallback_max_layers < 1:
            raise ConfigError(f"--fallback-max-layers must be >= 1, got {self.fallback_max_layers}")
        if self.fallback_ranking not in FALLBACK_RANKINGS:
            raise ConfigError(f"--fallback-ranking must be one of {', '.join(FALLBACK_RANKINGS)}, "
                              f"got {self.fallback_ranking!r}")
        if self.fallback_ranking != "snr" and not self.fallback:
            raise ConfigError(f"--fallback-ranking {self.fallback_ranking} orders the --fallback layers but "
                              "--fallback is off (add --fallback)")
        if self.qat_epochs is not None and self.qat_epochs < 1:
            raise ConfigError("--qat needs --qat-epochs >= 1")
        if not 0.0 <= self.qat_distill <= 1.0:
            raise ConfigError(f"--qat-distill must be in [0, 1], got {self.qat_distill}")
        if self.precisions is not None:
            for p in self.precisions:
                if not any((f, p) in SUPPORTED for f in self.formats):
                    names = ", ".join(f.value for f in self.formats)
                    raise ConfigError(f"precision {p.value} is not supported by the chosen format(s) {names}")

    def resolved_precisions(self) -> tuple[Precision, ...]:
        """The precisions asked for, or the union of the defaults of the chosen formats."""
        if self.precisions is not None:
            return self.precisions
        out: list[Precision] = []
        for f in self.formats:
            out += [p for p in DEFAULT_PRECISIONS[f] if p not in out]
        return tuple(out)

    def jobs(self) -> list[tuple[Format, Precision]]:
        """(format, precision) pairs to export, in order; unsupported pairs are left out."""
        wanted = self.resolved_precisions()
        out = []
        for f in self.formats:
            allowed = DEFAULT_PRECISIONS[f] if self.precisions is None else wanted
            out += [(f, p) for p in allowed if (f, p) in SUPPORTED]
        return out

    def auto_qat(self) -> ExportConfig:
        """The configuration of ``qat_if_gate_fails``'s second try: QAT on, and without the options
        that only apply to post-training int8 (``quant_report``, ``fallback``)."""
        return replace(self, qat=True, quant_report=False, fallback=False, fallback_ranking="snr")

    def file_name(self, fmt: Format, precision: Precision) -> str:
        """Artifact file name: ``model_int8.tflite``, ``model_pruned50_int8.onnx``, ``model_qat_int8.tflite``."""
        parts = ["model"]
        if self.prune_sparsity:
            parts.append(f"pruned{round(self.prune_sparsity * 100)}")
        if self.qat and precision is Precision.INT8:
            parts.append("qat")
        parts.append(precision.value)
        return "_".join(parts) + "." + fmt.value

    def to_dict(self) -> dict:
        d = asdict(self)
        d["formats"] = [f.value for f in self.formats]
        d["precisions"] = [p.value for p in self.precisions] if self.precisions is not None else None
        d["tflite_int8"] = self.tflite_int8.value
        d["int8_io"] = self.int8_io.value
        d["onnx_int8"] = self.onnx_int8.value
        return d


@dataclass(frozen=True)
class ExportJob:
    """What one exporter call gets besides the model and output path.

    Attributes:
        precision: the precision to produce.
        config: the export configuration.
        representative: float32 (N, H, W, C) RGB/grey [0, 255] training images for int8 calibration.
        metadata: the JSON object to embed in the file (``Manifest.embedded_metadata``); ONNX
            exporters add ``input_quantization``/``output_quantization`` for int8/uint8 graph I/O.
        quantization_aware: the model was trained with QAT (fake-quant layers carry the ranges).
        float_layers: layers to keep in float in an INT8 file (``--fallback``): TFLite output tensor
            names (QuantizationDebugger ``denylisted_nodes``) or ONNX node names (``nodes_to_exclude``).
    """

    precision: Precision
    config: ExportConfig
    representative: np.ndarray
    metadata: dict
    quantization_aware: bool = False
    float_layers: tuple[str, ...] = ()


def resolved_onnx_recipe(cfg: ExportConfig) -> OnnxInt8Recipe:
    """``cfg.onnx_int8`` with AUTO resolved for this machine's CPU (:func:`edgeclf.runtime.cpu.cpu_features`)."""
    from edgeclf.runtime.cpu import cpu_features

    return choose_onnx_recipe(cfg.onnx_int8, cpu_features().int8_kernel_class)

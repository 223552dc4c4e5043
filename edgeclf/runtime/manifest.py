"""The model-directory contract: ``manifest.json`` and the metadata embedded in artifacts.

Pure JSON/dataclasses, no TensorFlow: the runtime reads it, export writes it.

``manifest.json`` (schema_version 1)::

    {
      "schema_version": 1,
      "name": "cifar10-cnn", "model": "cnn", "dataset": "cifar10",
      "input": InputSpec,                 # see below
      "labels": ["airplane", ...],        # index order
      "float_top1_acc": 0.91,             # Keras float original on the validation images
      "artifacts": [ArtifactEntry, ...]   # one per exported file, keyed by "file"
    }

A manifest without ``schema_version`` (older edgeclf) is read as version 1; a manifest whose
version is higher than :data:`SCHEMA_VERSION` is refused with a :class:`ManifestError` naming the file.

Embedded metadata (ONNX ``metadata_props`` key ``"edgeclf"``; TFLite model metadata entry named
``"edgeclf"``) is the JSON of ``{"schema_version", "input", "labels", "precision", "sparsity"}``
so a lone ``.tflite``/``.onnx`` file still works.
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeclf.errors import ManifestError
from edgeclf.runtime.cpu import CpuFeatures

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
METADATA_KEY = "edgeclf"


class Format(str, enum.Enum):
    """Artifact file format; the value is the file suffix without the dot. Definition order is table order."""

    TFLITE = "tflite"
    ONNX = "onnx"

    @property
    def suffix(self) -> str:
        """``".tflite"`` / ``".onnx"``."""
        return "." + self.value

    @classmethod
    def of_path(cls, path: str | Path) -> Format | None:
        """The format a file name's suffix says (case-insensitive), or None for any other suffix."""
        suffix = Path(path).suffix.lower()
        return next((f for f in cls if f.suffix == suffix), None)


class Precision(str, enum.Enum):
    """Numeric precision of an artifact (``none`` on the command line means FP32). Definition order is table order."""

    FP32 = "fp32"
    FP16 = "fp16"          # float16 weights, float32 compute/I-O (TFLite only)
    DYNAMIC = "dynamic"    # int8 weights, float activations quantized on the fly (TFLite only)
    INT8 = "int8"          # full-integer: int8 weights and activations (TFLite: int8 I/O)


class ArtifactStatus(str, enum.Enum):
    """Export-time verdict of an artifact that was written."""

    OK = "ok"
    VALIDATION_FAILED = "validation failed"  # kept with --allow-drop although it missed the accuracy gate


#: What ``edgeclf export`` makes when no format/precision is asked for, in table order. The loader's
#: default pick, the export defaults, the bench's expected rows and the CLI help all derive from it.
DEFAULT_ARTIFACTS: tuple[tuple[Format, Precision], ...] = (
    (Format.TFLITE, Precision.FP32), (Format.TFLITE, Precision.FP16), (Format.TFLITE, Precision.DYNAMIC),
    (Format.TFLITE, Precision.INT8), (Format.ONNX, Precision.FP32), (Format.ONNX, Precision.INT8),
)
#: The precision a model directory runs by default (the first format of DEFAULT_ARTIFACTS that has it wins).
DEFAULT_RUN_PRECISION = Precision.INT8


def check_schema_version(version: Any, source: str) -> int:
    """``version`` as an int (None = 1, an older edgeclf); ``source`` names the file in errors.

    Raises:
        ManifestError: not an integer, or newer than :data:`SCHEMA_VERSION`.
    """
    if version is None:
        return 1
    if isinstance(version, bool) or not isinstance(version, int):
        raise ManifestError(f"{source}: schema_version {version!r} is not an integer")
    if version > SCHEMA_VERSION:
        raise ManifestError(f"{source}: schema_version {version} is newer than this edgeclf understands "
                            f"({SCHEMA_VERSION}); upgrade edgeclf")
    return version


_MAX_SIDE = 1 << 16  # largest input height/width accepted from a manifest or embedded metadata, px
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _whole(value: Any) -> int:
    """``value`` as an int if it is an integral number (not a bool or a string); else TypeError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise TypeError(f"{value!r} is not a whole number")
    return int(value)


def parse_labels(value: Any, source: str) -> list[str]:
    """A manifest's or embedded metadata's ``labels``: a non-empty JSON list of non-empty strings.

    Raises:
        ManifestError: naming ``source``, for anything else (a string, numbers, blanks, an empty list).
    """
    if not isinstance(value, list) or not value or not all(isinstance(x, str) and x.strip() for x in value):
        raise ManifestError(f"{source}: labels must be a non-empty list of class names")
    return list(value)


def parse_embedded(raw: str | bytes, source: str) -> dict[str, Any]:
    """The ``"edgeclf"`` JSON embedded in an artifact (ONNX ``metadata_props``, TFLite metadata) -> dict.

    Raises:
        ManifestError: naming ``source``: not UTF-8, not JSON, or not a JSON object.
    """
    try:
        meta = json.loads(raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"{source}: embedded '{METADATA_KEY}' metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ManifestError(f"{source}: embedded '{METADATA_KEY}' metadata is not a JSON object")
    return meta


def embedded_essentials(meta: dict[str, Any], source: str) -> tuple[InputSpec, list[str], str | None]:
    """(input spec, labels, precision value or None) from parsed embedded metadata (:func:`parse_embedded`).

    Raises:
        ManifestError: naming ``source``: a newer schema_version, missing or malformed fields.
    """
    check_schema_version(meta.get("schema_version"), f"{source}: embedded '{METADATA_KEY}' metadata")
    if not isinstance(meta.get("input"), dict):
        raise ManifestError(f"{source}: embedded '{METADATA_KEY}' metadata has no input spec")
    try:
        spec = InputSpec.from_dict(meta["input"])
    except ManifestError as exc:
        raise ManifestError(f"{source}: embedded '{METADATA_KEY}' metadata: {exc}") from None
    precision = meta.get("precision")
    if precision is not None and (not isinstance(precision, str) or precision not in {p.value for p in Precision}):
        raise ManifestError(f"{source}: embedded '{METADATA_KEY}' metadata has an unknown precision {precision!r}")
    return spec, parse_labels(meta.get("labels"), f"{source}: embedded '{METADATA_KEY}' metadata"), precision


@dataclass(frozen=True)
class InputSpec:
    """What one model input is: float32 (1, height, width, channels), layout NHWC.

    ``color_order`` is ``"RGB"`` or ``"GRAY"``; pixel values are in ``value_range`` (edgeclf models
    take [0, 255]). The runtime computes ``(pixel - mean) / std`` per channel before feeding the model;
    edgeclf models normalise inside themselves, so their mean is 0 and std is 1.
    """

    height: int
    width: int
    channels: int = 3
    layout: str = "NHWC"
    color_order: str = "RGB"
    value_range: tuple[float, float] = (0.0, 255.0)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("value_range", "mean", "std"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        """Raises ManifestError if ``d`` lacks height/width or has malformed values: sizes not
        positive integers, channels not 1 or 3, mean/std not finite with 1 or ``channels`` values,
        a zero std."""
        try:
            spec = cls(
                height=_whole(d["height"]),
                width=_whole(d["width"]),
                channels=_whole(d.get("channels", 3)),
                layout=str(d.get("layout", "NHWC")),
                color_order=str(d.get("color_order", "RGB")),
                value_range=tuple(float(v) for v in d.get("value_range", (0.0, 255.0))),
                mean=tuple(float(v) for v in d.get("mean", (0.0,))),
                std=tuple(float(v) for v in d.get("std", (1.0,))),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ManifestError(f"input spec is malformed: {exc!r}") from None
        problems = [f"{k} {v} is not in 1..{_MAX_SIDE}" for k, v in (("height", spec.height), ("width", spec.width))
                    if not 1 <= v <= _MAX_SIDE]
        if spec.channels not in (1, 3):
            problems.append(f"channels {spec.channels} is not 1 or 3")
        for key in ("mean", "std", "value_range"):
            values = getattr(spec, key)
            if not all(math.isfinite(v) for v in values) or len(values) not in ((2,) if key == "value_range"
                                                                                 else (1, spec.channels)):
                problems.append(f"{key} {list(values)} is malformed")
        if 0.0 in spec.std:
            problems.append("std has a zero")
        if problems:
            raise ManifestError(f"input spec is malformed: {'; '.join(problems)}")
        return spec


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of an int8/uint8 graph input or output: ``real = (q - zero_point) * scale``."""

    dtype: str           # "int8" or "uint8"
    scale: float
    zero_point: int


@dataclass(frozen=True)
class Int8Weights:
    """The int8/uint8 weight tensors counted in an artifact file.

    ``int8_kernel_params`` counts the elements of int8 tensors with >= 2 dims (conv/dense kernels);
    ``int8_kernel_zero_fraction`` is the fraction of them that are 0 (the sparsity that survived).
    """

    int8_weight_tensors: int
    int8_kernel_params: int
    int8_kernel_zero_fraction: float


@dataclass(frozen=True)
class Validation:
    """An artifact measured on ``n_images`` test images against the float model.

    ``top1_acc`` fraction; ``acc_drop_pp`` = (float top-1 - artifact top-1) x 100, percentage points
    (positive = worse); ``top1_agreement`` fraction of images with the same arg-max as the float
    model; ``max_abs_prob_diff`` largest |p_artifact - p_float| over all images and classes.
    """

    top1_acc: float
    acc_drop_pp: float
    top1_agreement: float
    max_abs_prob_diff: float
    n_images: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LayerError:
    """Quantization error of one layer's output on the calibration images (``--quant-report``).

    ``snr_db`` = 10 log10(sum(float^2) / sum((quantized - float)^2)), higher is better; ``mse`` the
    mean squared difference in the layer's output units; ``scope`` ``"layer"`` (that op alone, its
    inputs identical: TFLite QuantizationDebugger) or ``"cumulative"`` (against the float model's same
    tensor: onnxruntime qdq_loss_debug).
    """

    layer: str
    op_type: str
    snr_db: float
    mse: float
    scope: str = "layer"


@dataclass(frozen=True)
class FallbackAttempt:
    """One file ``--fallback`` made and validated: its float layers and its top-1 drop (points).

    ``probe``: a ``--fallback-ranking measured`` measurement (that one layer alone in float, made to
    rank the candidates) rather than a step of the cumulative search.
    """

    float_layers: list[str]
    acc_drop_pp: float
    probe: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FallbackAttempt:
        return cls(float_layers=[str(x) for x in d["float_layers"]], acc_drop_pp=float(d["acc_drop_pp"]),
                   probe=bool(d.get("probe", False)))


FALLBACK_KEPT = ("within-budget", "best", "last")


@dataclass(frozen=True)
class FallbackCost:
    """What ``--fallback`` (layers kept in float) cost: the all-int8 file vs the one written.

    Sizes in bytes; latencies batch-1 p50 in ms on the export machine, 1 engine thread;
    ``acc_drop_pp_int8`` the all-int8 file's drop (points); ``within_budget`` False when the layer
    limit was reached first.

    ``kept`` says which file was written: ``"within-budget"`` the first attempt within the budget
    (the fewest float layers that pass); ``"best"`` none passed, so the one with the smallest drop
    among every attempt *and* the all-int8 file (when that is the all-int8 file, the entry's
    ``float_layers`` is [] and the cost figures equal the int8 ones); ``"last"`` manifests written before this field (edgeclf kept the last
    attempt). ``ranking``: how the candidate layers were ordered (``--fallback-ranking``: ``snr``,
    ``measured``). ``attempts``: every file made, in order (empty in older manifests).
    """

    acc_drop_pp_int8: float
    size_bytes_int8: int
    latency_ms_p50_int8: float
    latency_ms_p50: float
    within_budget: bool
    kept: str = "last"
    ranking: str = "snr"
    attempts: list[FallbackAttempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kept not in FALLBACK_KEPT:
            raise ValueError(f"fallback kept {self.kept!r} is not one of {', '.join(FALLBACK_KEPT)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FallbackCost:
        """Parse the ``fallback`` record (older ones without kept/ranking/attempts take the defaults)."""
        kw = dict(d)
        kw["attempts"] = [FallbackAttempt.from_dict(a) for a in d.get("attempts") or []]
        return cls(**kw)


_RECORDS = {"input_quantization": QuantParams, "output_quantization": QuantParams, "int8_weights": Int8Weights,
            "validation": Validation, "fallback": FallbackCost}


@dataclass(frozen=True)
class ArtifactEntry:
    """One exported file in ``manifest.json``.

    Attributes:
        file: file name inside the model directory, e.g. ``model_int8.tflite``.
        format, precision: what the file is.
        sparsity: fraction of zero Conv/Dense kernel weights of the exported model (0 = not pruned).
        quantization_aware: int8 made from a QAT model.
        quantizer: the tool chain of an int8 file (``converter``, ``ai-edge-quantizer``,
            ``from-tflite``, ``ort-qdq``, ``qat+converter``, ``qat+converter+tf2onnx``); None otherwise.
        sha256: hex digest of the file; size_bytes, size_gzip_bytes: bytes, plain and gzip -9.
        input_quantization, output_quantization: parameters of int8/uint8 graph I/O, None for float I/O.
        int8_weights: int8 weight tensors found in the file.
        validation: accuracy against the float model at export time.
        status: ``ok``, or ``validation failed`` (kept with ``--allow-drop``).
        tools: versions of the tool chain, ``{name: version}``.
        created: ISO-8601 UTC time of the export.
        validated_on: the CPU the validation ran on (int8 kernel class; :mod:`edgeclf.runtime.cpu`).
        float_layers: layers ``--fallback`` kept in float (TFLite tensor / ONNX node names), [] = all int8.
        fallback: the size/latency cost of those float layers, which attempt was kept and every attempt
            made; None without fallback.
        worst_layers: the (up to 5) layers with the lowest SNR in the ``--quant-report``, worst first.
    """

    file: str
    format: Format
    precision: Precision
    sparsity: float = 0.0
    quantization_aware: bool = False
    quantizer: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    size_gzip_bytes: int | None = None
    input_quantization: QuantParams | None = None
    output_quantization: QuantParams | None = None
    int8_weights: Int8Weights | None = None
    validation: Validation | None = None
    status: ArtifactStatus = ArtifactStatus.OK
    tools: dict[str, str] = field(default_factory=dict)
    created: str | None = None
    validated_on: CpuFeatures | None = None
    float_layers: list[str] = field(default_factory=list)
    fallback: FallbackCost | None = None
    worst_layers: list[LayerError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; enums as their values, records as dicts, every field present."""
        d = asdict(self)
        for key in ("format", "precision", "status"):
            d[key] = getattr(self, key).value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "manifest") -> ArtifactEntry:
        """Parse one entry (also those of older edgeclf versions: missing fields take their defaults,
        a missing ``format`` comes from the file suffix, unknown keys are ignored).

        Raises:
            ManifestError: naming ``source``: no ``file`` or one that is not a plain file name
                (``../x``, ``a/b``), a sha256 that is not 64 hex digits, an unknown
                format/precision/status, or a malformed record.
        """
        try:
            file = d["file"]
            if not isinstance(file, str) or not file or file != Path(file).name or file in (".", ".."):
                raise ValueError(f"file {file!r} is not a plain file name inside the model directory")
            if d.get("sha256") is not None and not (isinstance(d["sha256"], str) and _SHA256.fullmatch(d["sha256"])):
                raise ValueError(f"sha256 {d['sha256']!r} is not 64 hex digits")
            known = {f.name for f in fields(cls)}
            kw: dict[str, Any] = {k: v for k, v in d.items() if k in known}
            kw["file"] = file
            kw["format"] = Format(d["format"]) if d.get("format") else Format.of_path(file)
            if kw["format"] is None:
                raise ValueError(f"no format and an unknown file suffix in {file!r}")
            kw["precision"] = Precision(d["precision"])
            kw["status"] = ArtifactStatus(d.get("status") or ArtifactStatus.OK.value)
            kw["sparsity"] = float(d.get("sparsity") or 0.0)
            kw["quantization_aware"] = bool(d.get("quantization_aware", False))
            kw["tools"] = {str(k): str(v) for k, v in (d.get("tools") or {}).items()}
            for key, record in _RECORDS.items():
                if d.get(key) is not None:
                    kw[key] = record.from_dict(d[key]) if hasattr(record, "from_dict") else record(**d[key])
            if d.get("validated_on") is not None:
                kw["validated_on"] = CpuFeatures.from_dict(d["validated_on"])
            kw["float_layers"] = [str(x) for x in d.get("float_layers") or []]
            kw["worst_layers"] = [LayerError(**x) for x in d.get("worst_layers") or []]
            return cls(**kw)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            name = d.get("file", "?") if isinstance(d, dict) else "?"
            raise ManifestError(f"{source}: artifact entry {name!r} is malformed ({exc})") from None


@dataclass
class Manifest:
    """In-memory ``manifest.json``: input spec, labels, one :class:`ArtifactEntry` per exported file."""

    name: str
    input: InputSpec
    labels: list[str]
    model: str = ""
    dataset: str = ""
    float_top1_acc: float | None = None
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "model": self.model,
            "dataset": self.dataset,
            "input": self.input.to_dict(),
            "labels": list(self.labels),
            "float_top1_acc": self.float_top1_acc,
            "artifacts": [a.to_dict() for a in self.artifacts],
        }

    def artifact(self, file_name: str) -> ArtifactEntry | None:
        """The entry whose ``file`` is ``file_name``, or None."""
        return next((a for a in self.artifacts if a.file == file_name), None)

    def upsert_artifact(self, entry: ArtifactEntry) -> None:
        """Insert ``entry`` or replace the entry for the same ``file`` (the new one goes last)."""
        self.artifacts = [a for a in self.artifacts if a.file != entry.file] + [entry]

    def embedded_metadata(self, precision: Precision, sparsity: float = 0.0) -> dict[str, Any]:
        """The essentials to embed inside one artifact file (JSON-ready)."""
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "input": self.input.to_dict(),
            "labels": list(self.labels),
            "precision": Precision(precision).value,
            "sparsity": float(sparsity),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "manifest") -> Manifest:
        """Parse a manifest dict; ``source`` (the file) is named in errors.

        Raises:
            ManifestError: newer schema_version, missing/malformed fields or artifact entries.
        """
        if not isinstance(d, dict):
            raise ManifestError(f"{source}: not a JSON object")
        version = check_schema_version(d.get("schema_version"), source)
        if not isinstance(d.get("input"), dict):
            raise ManifestError(f"{source}: no input spec (an 'input' object)")
        if not isinstance(d.get("artifacts", []), list):
            raise ManifestError(f"{source}: 'artifacts' is not a list")
        try:
            spec = InputSpec.from_dict(d["input"])
        except ManifestError as exc:
            raise ManifestError(f"{source}: {exc}") from None
        labels = parse_labels(d.get("labels"), source)
        try:
            acc = d.get("float_top1_acc")
            return cls(
                name=str(d.get("name", "")),
                input=spec,
                labels=labels,
                model=str(d.get("model", "")),
                dataset=str(d.get("dataset", "")),
                float_top1_acc=None if acc is None else float(acc),
                artifacts=[a if isinstance(a, ArtifactEntry) else ArtifactEntry.from_dict(a, source)
                           for a in d.get("artifacts", [])],
                schema_version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{source}: missing or malformed field {exc}") from None


def read_manifest(model_dir: str | Path) -> Manifest:
    """Read ``MODEL_DIR/manifest.json``.

    Raises:
        ManifestError: naming the file: missing, not JSON, lacks required fields, or written by a
            newer edgeclf (higher schema_version).
    """
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest.json (run 'edgeclf export' on the model directory first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    return Manifest.from_dict(data, source=str(path))


def write_manifest(model_dir: str | Path, manifest: Manifest) -> Path:
    """Write ``MODEL_DIR/manifest.json`` atomically; returns its path."""
    from edgeclf._io import write_json

    return write_json(Path(model_dir) / MANIFEST_NAME, manifest.to_dict())

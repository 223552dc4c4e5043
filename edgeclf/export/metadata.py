"""Metadata inside every exported ``.tflite``: the edgeclf JSON entry and the standard TFLite Model Metadata.

Two entries in the model's ``metadata`` table, then the associated files:

1. ``"edgeclf"``: the JSON of ``Manifest.embedded_metadata`` (what ``edgeclf predict`` reads first);
2. ``"TFLITE_METADATA"``: the standard Model Metadata FlatBuffer (schema ``metadata_schema.fbs``,
   identifier ``"M001"``) that MediaPipe Tasks, the TFLite Task Library and Model Maker read, laid
   out as their ``ImageClassifierWriter`` writes it: model name / description / version / author;
   input ``image`` with ``ImageProperties`` (RGB or GRAYSCALE, default size W x H),
   ``NormalizationOptions`` (the mean/std a float input expects: 0 / 1 for edgeclf models, which
   take pixels 0-255 and normalise inside) and value ``Stats``; output ``probability``
   (``FeatureProperties``, softmax probabilities, stats 0..1, or 0..255 for a uint8 output)
   with the labels as a ``TENSOR_AXIS_LABELS`` associated file ``labels.txt``;
3. the associated files packed as an uncompressed ZIP archive appended to the model bytes, as
   ``MetadataPopulator`` does (fixed timestamps, so the same model gives the same bytes).

Re-packing the flatbuffer (:func:`add_entries`) drops anything appended, so the labels archive is
packed last (:func:`pack_labels`); :func:`embed` does both. Schema bindings: the vendored
:mod:`edgeclf.runtime._vendor.metadata_schema_py_generated` (see docs/export.md for why).

Sources: https://ai.google.dev/edge/litert/models/metadata_writer_tutorial ,
mediapipe/tasks/python/metadata/metadata_writers/{image_classifier,metadata_info}.py (mediapipe 1.2.2).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass

import flatbuffers

from edgeclf import __version__
from edgeclf.runtime.manifest import METADATA_KEY
from edgeclf.runtime.tflite_metadata import add_metadata
from edgeclf.runtime.tflite_model_metadata import (
    METADATA_FILE_IDENTIFIER,
    MIN_PARSER_VERSION,
    STANDARD_METADATA_NAME,
    schema,
)

AUTHOR = "edgeclf"
LABELS_FILE = "labels.txt"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # zip's epoch: reproducible archives


@dataclass(frozen=True)
class ClassifierInfo:
    """What the standard metadata says about an image classifier.

    Attributes:
        name: model name, e.g. ``cifar10-cnn``.
        labels: class names in output index order.
        height, width: input size in pixels; channels: 3 (RGB) or 1 (grey).
        mean, std: per-channel (or single) normalisation ``(pixel - mean) / std`` a float input
            expects, on the 0-255 scale (edgeclf models: 0 and 1).
        description, version, author, license: general model information.
    """

    name: str
    labels: tuple[str, ...]
    height: int
    width: int
    channels: int = 3
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    description: str | None = None
    version: str | None = __version__
    author: str | None = AUTHOR
    license: str | None = None

    @classmethod
    def from_embedded(cls, meta: dict) -> ClassifierInfo:
        """From the edgeclf JSON (``Manifest.embedded_metadata``: name, input, labels, precision)."""
        spec = meta["input"]
        labels = tuple(str(x) for x in meta["labels"])
        h, w, c = int(spec["height"]), int(spec["width"]), int(spec.get("channels", 3))
        colour = "grey" if c == 1 else "RGB"
        return cls(
            name=str(meta.get("name") or "edgeclf-model"), labels=labels, height=h, width=w, channels=c,
            mean=tuple(float(v) for v in spec.get("mean", (0.0,))),
            std=tuple(float(v) for v in spec.get("std", (1.0,))),
            description=(f"Image classifier exported by edgeclf ({meta.get('precision', 'fp32')}): {len(labels)} "
                         f"classes, {h}x{w} {colour} input, pixel values 0-255."),
        )


def io_tensor_types(tflite_bytes: bytes) -> tuple[int, int]:
    """TFLite ``TensorType`` codes of subgraph 0's first input and first output (0 float32, 3 uint8, 9 int8)."""
    from ai_edge_litert import schema_py_generated as tfl

    model = tfl.Model.GetRootAs(tflite_bytes, 0)
    sub = model.Subgraphs(0)
    return sub.Tensors(sub.Inputs(0)).Type(), sub.Tensors(sub.Outputs(0)).Type()


def _stats(fb, lo: list[float] | None, hi: list[float] | None):
    stats = fb.StatsT()
    stats.min, stats.max = lo, hi
    return stats


def _input_tensor(fb, info: ClassifierInfo, input_type: int):
    t = fb.TensorMetadataT()
    t.name = "image"
    t.description = "Input image to be classified."
    content = fb.ContentT()
    content.contentPropertiesType = fb.ContentProperties.ImageProperties
    props = fb.ImagePropertiesT()
    props.colorSpace = fb.ColorSpaceType.GRAYSCALE if info.channels == 1 else fb.ColorSpaceType.RGB
    size = fb.ImageSizeT()
    size.width, size.height = info.width, info.height
    props.defaultSize = size
    content.contentProperties = props
    t.content = content
    norm = fb.ProcessUnitT()
    norm.optionsType = fb.ProcessUnitOptions.NormalizationOptions
    norm.options = fb.NormalizationOptionsT()
    norm.options.mean, norm.options.std = list(info.mean), list(info.std)
    t.processUnits = [norm]
    if input_type == 3:  # uint8: the pixels themselves
        t.stats = _stats(fb, [0.0], [255.0])
    elif input_type == 0:  # float32: the normalised pixel range
        mean = info.mean * len(info.std) if len(info.mean) == 1 else info.mean
        std = info.std * len(mean) if len(info.std) == 1 else info.std
        t.stats = _stats(fb, [(0.0 - m) / s for m, s in zip(mean, std)], [(255.0 - m) / s for m, s in zip(mean, std)])
    else:
        t.stats = _stats(fb, None, None)
    return t


def _output_tensor(fb, info: ClassifierInfo, output_type: int):
    t = fb.TensorMetadataT()
    t.name = "probability"
    t.description = f"Probabilities of the {len(info.labels)} labels respectively (softmax)."
    content = fb.ContentT()
    content.contentPropertiesType = fb.ContentProperties.FeatureProperties
    content.contentProperties = fb.FeaturePropertiesT()
    t.content = content
    t.stats = {3: _stats(fb, [0.0], [255.0]), 0: _stats(fb, [0.0], [1.0])}.get(output_type, _stats(fb, None, None))
    labels = fb.AssociatedFileT()
    labels.name = LABELS_FILE
    labels.description = "Labels for categories that the model can recognize."
    labels.type = fb.AssociatedFileType.TENSOR_AXIS_LABELS
    t.associatedFiles = [labels]
    return t


def standard_metadata(info: ClassifierInfo, input_type: int, output_type: int) -> bytes:
    """The standard metadata FlatBuffer (identifier ``"M001"``) for one image classifier.

    Args:
        info: what to declare.
        input_type, output_type: TFLite ``TensorType`` codes of the model's input and output
            (:func:`io_tensor_types`); they decide the value stats, as the metadata writers do.

    Raises:
        ValueError: ``mean`` and ``std`` have different lengths (other than 1).
    """
    if len(info.mean) != len(info.std) and 1 not in (len(info.mean), len(info.std)):
        raise ValueError(f"mean and std need the same number of values, got {len(info.mean)} and {len(info.std)}")
    fb = schema()
    sub = fb.SubGraphMetadataT()
    sub.inputTensorMetadata = [_input_tensor(fb, info, input_type)]
    sub.outputTensorMetadata = [_output_tensor(fb, info, output_type)]
    meta = fb.ModelMetadataT()
    meta.name, meta.description, meta.version = info.name, info.description, info.version
    meta.author, meta.license = info.author, info.license
    meta.subgraphMetadata = [sub]
    meta.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(1024)
    builder.Finish(meta.Pack(builder), METADATA_FILE_IDENTIFIER)
    return bytes(builder.Output())


def add_standard_entry(tflite_bytes: bytes, info: ClassifierInfo) -> bytes:
    """The model with a ``TFLITE_METADATA`` entry for ``info`` (replacing an existing one; no labels archive yet)."""
    input_type, output_type = io_tensor_types(tflite_bytes)
    return add_metadata(tflite_bytes, STANDARD_METADATA_NAME, standard_metadata(info, input_type, output_type))


def add_entries(tflite_bytes: bytes, meta: dict) -> bytes:
    """The model with both metadata entries: ``"edgeclf"`` (``meta`` as JSON) and ``TFLITE_METADATA``.

    Anything appended to ``tflite_bytes`` (an old labels archive) is dropped: call :func:`pack_labels` next.
    """
    data = add_metadata(tflite_bytes, METADATA_KEY, json.dumps(meta).encode("utf-8"))
    return add_standard_entry(data, ClassifierInfo.from_embedded(meta))


def pack_labels(tflite_bytes: bytes, labels: tuple[str, ...] | list[str]) -> bytes:
    """Append the associated-files ZIP (``labels.txt``, one label per line, UTF-8) to a model's bytes."""
    buf = io.BytesIO(bytes(tflite_bytes))
    buf.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo(LABELS_FILE, date_time=_ZIP_DATE), "\n".join(labels) + "\n")
    return buf.getvalue()


def embed(tflite_bytes: bytes, meta: dict) -> bytes:
    """Both metadata entries and the labels archive: what every exported ``.tflite`` carries."""
    return pack_labels(add_entries(tflite_bytes, meta), meta["labels"])


def write_standard_metadata(tflite_bytes: bytes, info: ClassifierInfo) -> bytes:
    """Standard metadata and labels only (no edgeclf entry): a model as MediaPipe / Model Maker would ship it."""
    return pack_labels(add_standard_entry(tflite_bytes, info), info.labels)

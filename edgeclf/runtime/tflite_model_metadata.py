"""Read the standard TensorFlow Lite Model Metadata of a ``.tflite`` file (no TensorFlow).

The standard (``TFLITE_METADATA``) is what MediaPipe Tasks, the TFLite Task Library and Model Maker
read and write: a FlatBuffer (schema ``metadata_schema.fbs``, file identifier ``"M001"``) stored
in the model's metadata entry named ``"TFLITE_METADATA"``, plus *associated files* (the labels
file, ...) packed as a ZIP archive appended to the model's bytes (``MetadataPopulator``). For an
image classifier it declares:

* the input image: colour space (RGB / GRAYSCALE) and optionally a default size
  (``ImageProperties``), and the normalisation ``(pixel - mean) / std`` a *float* input expects
  (``NormalizationOptions``; a uint8 input takes the pixels 0-255 as they are);
* the output's labels, one per line, in a ``TENSOR_AXIS_LABELS`` associated file.

edgeclf's exporter writes it (:mod:`edgeclf.export.metadata`); the loader reads it here so that a
third-party classifier carrying it runs with no options. Schema bindings: the vendored
:mod:`edgeclf.runtime._vendor.metadata_schema_py_generated` (Apache-2.0).

Sources: https://ai.google.dev/edge/litert/models/metadata ,
https://github.com/google-ai-edge/mediapipe/blob/master/mediapipe/tasks/metadata/metadata_schema.fbs
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from edgeclf.errors import ManifestError
from edgeclf.runtime.tflite_metadata import read_metadata

#: Name of the model metadata entry holding the standard metadata FlatBuffer.
STANDARD_METADATA_NAME = "TFLITE_METADATA"
#: FlatBuffer file identifier of the metadata schema.
METADATA_FILE_IDENTIFIER = b"M001"
#: Oldest metadata parser that understands every field edgeclf writes (all date from schema 1.0.0).
MIN_PARSER_VERSION = "1.0.0"


def schema():
    """The vendored metadata schema bindings module (needs ``flatbuffers``, a LiteRT dependency)."""
    from edgeclf.runtime._vendor import metadata_schema_py_generated

    return metadata_schema_py_generated


@dataclass(frozen=True)
class StandardMetadata:
    """What a model's standard metadata declares about an image classifier (None = not declared).

    Attributes:
        name, description, version, author, license: the model's general information.
        color_space: ``"RGB"`` or ``"GRAY"`` (the metadata's GRAYSCALE); None if UNKNOWN/absent.
        image_size: (height, width) in pixels from ``ImageProperties.default_size``.
        mean, std: per-channel (or single) normalisation of a float input on the 0-255 scale.
        labels: class names in output index order, from the first ``TENSOR_AXIS_LABELS`` file
            of the output tensor (the one without a locale if there are several).
        labels_file: that associated file's name (e.g. ``labels.txt``).
    """

    name: str | None = None
    description: str | None = None
    version: str | None = None
    author: str | None = None
    license: str | None = None
    color_space: str | None = None
    image_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels: list[str] | None = None
    labels_file: str | None = None


def parse_labels(text: str) -> list[str]:
    """Labels file text -> class names, one per line (whitespace stripped, trailing blank lines dropped).

    Raises:
        ManifestError (a ValueError): no labels, or a blank line between labels.
    """
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ManifestError("the labels file is empty")
    if "" in lines:
        raise ManifestError(f"blank line {lines.index('') + 1} in the labels file")
    return lines


def associated_files(tflite_bytes: bytes) -> dict[str, bytes]:
    """The files packed in the ZIP archive appended to a ``.tflite`` model ({} if there is none).

    Raises:
        ManifestError (a ValueError): an archive is there but cannot be read.
    """
    buf = io.BytesIO(tflite_bytes)
    if not zipfile.is_zipfile(buf):
        return {}
    try:
        with zipfile.ZipFile(buf) as zf:
            return {name: zf.read(name) for name in zf.namelist()}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:  # zipfile raises all three for corrupt archives
        raise ManifestError(f"the associated files archive is corrupt ({exc})") from None


def _text(value) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _image_properties(fb, tensor) -> tuple[str | None, tuple[int, int] | None]:
    content = tensor.content
    if content is None or content.contentPropertiesType != fb.ContentProperties.ImageProperties:
        return None, None
    props = content.contentProperties
    color = {fb.ColorSpaceType.RGB: "RGB", fb.ColorSpaceType.GRAYSCALE: "GRAY"}.get(props.colorSpace)
    size = props.defaultSize
    if size is not None and size.width > 0 and size.height > 0:
        return color, (int(size.height), int(size.width))
    return color, None


def _normalization(fb, tensor) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    for unit in tensor.processUnits or []:
        if unit.optionsType == fb.ProcessUnitOptions.NormalizationOptions and unit.options is not None:
            mean, std = unit.options.mean, unit.options.std
            if mean is None or std is None or len(mean) == 0 or len(std) == 0:
                raise ManifestError("NormalizationOptions without mean or std")
            return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    return None, None


def _labels_file(fb, tensor) -> str | None:
    files = [f for f in (tensor.associatedFiles or []) if f.type == fb.AssociatedFileType.TENSOR_AXIS_LABELS]
    if not files:
        return None
    plain = [f for f in files if not _text(f.locale)]
    return _text((plain or files)[0].name)


def read_standard_metadata(tflite_bytes: bytes) -> StandardMetadata | None:
    """Parse the standard metadata of a ``.tflite`` model; None if it has no ``TFLITE_METADATA`` entry.

    Only the first subgraph's first input and first output are read (an image classifier has one
    of each).

    Args:
        tflite_bytes: the whole file, including any appended associated-files archive.

    Raises:
        ManifestError (a ValueError): the entry is not a metadata FlatBuffer ("M001"), a table is corrupt, the
            labels file it names is missing from the archive, or the labels are malformed.
    """
    raw = read_metadata(tflite_bytes, STANDARD_METADATA_NAME)
    if raw is None:
        return None
    if len(raw) < 8 or raw[4:8] != METADATA_FILE_IDENTIFIER:
        raise ManifestError(f"'{STANDARD_METADATA_NAME}' is not a metadata FlatBuffer (identifier 'M001' missing)")
    fb = schema()
    try:
        meta = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAs(raw, 0))
    except Exception as exc:  # noqa: BLE001 - flatbuffers raises struct.error, IndexError, TypeError, ...
        raise ManifestError(f"'{STANDARD_METADATA_NAME}' is corrupt ({type(exc).__name__}: {exc})") from None
    color = size = mean = std = labels = labels_file = None
    subgraphs = meta.subgraphMetadata or []
    if subgraphs:
        inputs, outputs = subgraphs[0].inputTensorMetadata or [], subgraphs[0].outputTensorMetadata or []
        if inputs:
            color, size = _image_properties(fb, inputs[0])
            mean, std = _normalization(fb, inputs[0])
        if outputs:
            labels_file = _labels_file(fb, outputs[0])
    if labels_file is not None:
        files = associated_files(tflite_bytes)
        if labels_file not in files:
            raise ManifestError(f"labels file '{labels_file}' is named in the metadata but not packed in the model")
        try:
            labels = parse_labels(files[labels_file].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ManifestError(f"labels file '{labels_file}': {exc}") from None
    return StandardMetadata(
        name=_text(meta.name), description=_text(meta.description), version=_text(meta.version),
        author=_text(meta.author), license=_text(meta.license), color_space=color, image_size=size,
        mean=mean, std=std, labels=labels, labels_file=labels_file,
    )

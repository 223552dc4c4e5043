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

Embedded metadata (ONNX ``metadata_props`` key ``"edgeclf"``; TFLite model metadata entry named
``"edgeclf"``) is the JSON of ``{"schema_version", "input", "labels", "precision", "sparsity"}``
so a lone ``.tflite``/``.onnx`` file still works.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
METADATA_KEY = "edgeclf"


class ManifestError(ValueError):
    """manifest.json or embedded metadata is missing or malformed. The message names the file."""


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
        d["value_range"] = list(self.value_range)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        try:
            return cls(
                height=int(d["height"]),
                width=int(d["width"]),
                channels=int(d.get("channels", 3)),
                layout=str(d.get("layout", "NHWC")),
                color_order=str(d.get("color_order", "RGB")),
                value_range=tuple(float(v) for v in d.get("value_range", (0.0, 255.0))),
                mean=tuple(float(v) for v in d.get("mean", (0.0,))),
                std=tuple(float(v) for v in d.get("std", (1.0,))),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"input spec is malformed: {exc!r}") from None


@dataclass
class Manifest:
    """In-memory ``manifest.json``. ``artifacts`` are plain dicts (see the export package)."""

    name: str
    input: InputSpec
    labels: list[str]
    model: str = ""
    dataset: str = ""
    float_top1_acc: float | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)
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
            "artifacts": list(self.artifacts),
        }

    def artifact(self, file_name: str) -> dict[str, Any] | None:
        """The entry whose ``"file"`` is ``file_name``, or None."""
        for a in self.artifacts:
            if a.get("file") == file_name:
                return a
        return None

    def upsert_artifact(self, entry: dict[str, Any]) -> None:
        """Insert ``entry`` or replace the entry for the same ``"file"``."""
        self.artifacts = [a for a in self.artifacts if a.get("file") != entry["file"]] + [entry]

    def embedded_metadata(self, precision: str, sparsity: float = 0.0) -> dict[str, Any]:
        """The essentials to embed inside one artifact file."""
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "input": self.input.to_dict(),
            "labels": list(self.labels),
            "precision": precision,
            "sparsity": float(sparsity),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "manifest") -> "Manifest":
        try:
            return cls(
                name=str(d.get("name", "")),
                input=InputSpec.from_dict(d["input"]),
                labels=[str(x) for x in d["labels"]],
                model=str(d.get("model", "")),
                dataset=str(d.get("dataset", "")),
                float_top1_acc=d.get("float_top1_acc"),
                artifacts=list(d.get("artifacts", [])),
                schema_version=int(d.get("schema_version", SCHEMA_VERSION)),
            )
        except (KeyError, TypeError) as exc:
            raise ManifestError(f"{source}: missing or malformed field {exc}") from None


def read_manifest(model_dir: str | Path) -> Manifest:
    """Read ``MODEL_DIR/manifest.json``.

    Raises:
        ManifestError: the file is missing, not JSON, or lacks required fields.
    """
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest.json (run 'edgeclf export' on the model directory first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    return Manifest.from_dict(data, source=str(path))


def write_manifest(model_dir: str | Path, manifest: Manifest) -> Path:
    """Write ``MODEL_DIR/manifest.json`` atomically."""
    from edgeclf._io import write_json

    return write_json(Path(model_dir) / MANIFEST_NAME, manifest.to_dict())

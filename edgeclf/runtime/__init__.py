"""The edge runtime: run exported edgeclf models (``.tflite`` on LiteRT, ``.onnx`` on onnxruntime).

Never imports TensorFlow (it runs on a Raspberry Pi); engines are imported when a model of their
format is opened.

    >>> from edgeclf.runtime import load_classifier
    >>> clf = load_classifier("export/cifar10-cnn")            # manifest -> int8 .tflite
    >>> clf.classify([rgb_uint8_image], top_k=3)             # [[("cat", 0.91), ...]]
"""

from edgeclf.runtime.base import Classifier, ModelLoadError, TensorInfo, top_k_indices
from edgeclf.runtime.loader import ENGINES, choose_artifact, load_classifier, open_engine, read_labels
from edgeclf.runtime.manifest import (
    ArtifactEntry,
    ArtifactStatus,
    Format,
    InputSpec,
    Manifest,
    ManifestError,
    Precision,
    read_manifest,
)

__all__ = [
    "ENGINES",
    "ArtifactEntry",
    "ArtifactStatus",
    "Classifier",
    "Format",
    "InputSpec",
    "Manifest",
    "ManifestError",
    "ModelLoadError",
    "Precision",
    "TensorInfo",
    "choose_artifact",
    "load_classifier",
    "open_engine",
    "read_labels",
    "read_manifest",
    "top_k_indices",
]

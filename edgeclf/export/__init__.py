"""Export: turn a trained model directory into validated ``.tflite`` / ``.onnx`` files + ``manifest.json``.

    >>> from edgeclf.export import ExportConfig, Precision, export_model
    >>> result = export_model("export/cifar10-cnn", ExportConfig(precisions=(Precision.INT8,)))

Modules: ``config`` (ExportConfig, options; no TensorFlow), ``pipeline`` (export_model), ``registry``
(format x precision -> exporter), ``tflite`` / ``onnx`` (one exporter per format), ``quantize``,
``prune``, ``qat``, ``validate`` (run on the runtime, accuracy gate), ``artifacts`` (int8 weight
counts). Importing this package does not import TensorFlow; :func:`export_model` does.
"""

from edgeclf.errors import AccuracyGateError, ExportError
from edgeclf.export.config import (
           ExportConfig,
           Format,
           OnnxInt8Path,
           OnnxInt8Recipe,
           Precision,
           TfliteInt8Quantizer,
)
from edgeclf.export.pipeline import ExportResult, export_model
from edgeclf.runtime.manifest import Validation

__all__ = ["AccuracyGateError", "ExportConfig", "ExportError", "ExportResult", "Format", "OnnxInt8Path",
           "OnnxInt8Recipe",
           "Precision", "TfliteInt8Quantizer", "Validation", "export_model"]

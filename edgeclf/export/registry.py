"""The explicit exporter registry: (format, precision) -> ``export(model, out_path, job) -> Path``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgeclf.errors import ConfigError
from edgeclf.export import onnx as onnx_export
from edgeclf.export import tflite as tflite_export
from edgeclf.export.config import SUPPORTED, ExportJob, Format, Precision

Exporter = Callable[[object, Path, ExportJob], Path]

EXPORTERS: dict[tuple[Format, Precision], Exporter] = {
    (Format.TFLITE, Precision.FP32): tflite_export.export,
    (Format.TFLITE, Precision.FP16): tflite_export.export,
    (Format.TFLITE, Precision.DYNAMIC): tflite_export.export,
    (Format.TFLITE, Precision.INT8): tflite_export.export,
    (Format.ONNX, Precision.FP32): onnx_export.export_fp32,
    (Format.ONNX, Precision.INT8): onnx_export.export_int8,
}
assert set(EXPORTERS) == set(SUPPORTED), "registry and config.SUPPORTED disagree"


def exporter(fmt: Format, precision: Precision) -> Exporter:
    """The exporter for a pair. Raises ConfigError for an unsupported pair."""
    try:
        return EXPORTERS[(fmt, precision)]
    except KeyError:
        raise ConfigError(f"no {precision.value} exporter for {fmt.value}") from None

"""TFLite exporter: ``export(model, out_path, job) -> Path`` writes one ``.tflite`` file.

The file carries the edgeclf metadata (entry ``"edgeclf"``, see
:mod:`edgeclf.runtime.tflite_metadata`), so a lone file runs with ``edgeclf predict``.

Input float32 (or int8 for INT8) (1, H, W, C) RGB/grey pixels [0, 255]; output float32 (or int8)
(1, num_classes) softmax probabilities. The runtime resizes the batch dimension as needed.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeclf.export.config import ExportJob, Precision, TfliteInt8Quantizer
from edgeclf.export.quantize import aeq_int8, convert_keras
from edgeclf.runtime.manifest import METADATA_KEY
from edgeclf.runtime.tflite_metadata import add_metadata


def convert(model, job: ExportJob) -> bytes:
    """tf_keras model -> ``.tflite`` bytes at ``job.precision`` (no metadata yet).

    INT8 uses ``job.config.tflite_int8``: the TFLite converter (default) or ai_edge_quantizer on
    the fp32 conversion. A QAT model always goes through the converter (its fake-quant ranges).
    """
    if (job.precision is Precision.INT8 and job.config.tflite_int8 is TfliteInt8Quantizer.AI_EDGE_QUANTIZER
            and not job.quantization_aware):
        return aeq_int8(convert_keras(model, Precision.FP32, None), job.representative)
    return convert_keras(model, job.precision, job.representative, job.quantization_aware)


def export(model, out_path: Path, job: ExportJob) -> Path:
    """Convert ``model`` at ``job.precision``, embed ``job.metadata``, write ``out_path``; returns it.

    Raises:
        ValueError / RuntimeError from the converter (unsupported ops), one line in its message head.
    """
    data = add_metadata(convert(model, job), METADATA_KEY, json.dumps(job.metadata).encode("utf-8"))
    out_path = Path(out_path)
    out_path.write_bytes(data)
    return out_path

"""TFLite exporter: ``export(model, out_path, job) -> Path`` writes one ``.tflite`` file.

The file carries the edgeclf metadata (entry ``"edgeclf"``, see
:mod:`edgeclf.runtime.tflite_metadata`), so a lone file runs with ``edgeclf predict``.

Input float32 (or int8 for INT8) (1, H, W, C) RGB/grey pixels [0, 255]; output float32 (or int8)
(1, num_classes) softmax probabilities. The runtime resizes the batch dimension as needed.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeclf.errors import ExportError
from edgeclf.export.config import ExportJob, Precision, TfliteInt8Quantizer
from edgeclf.export.quantize import aeq_int8, convert_keras
from edgeclf.runtime.manifest import METADATA_KEY
from edgeclf.runtime.tflite_metadata import add_metadata, read_metadata


def convert(model, job: ExportJob) -> bytes:
    """tf_keras model -> ``.tflite`` bytes at ``job.precision`` with ``job.metadata`` embedded.

    INT8 uses ``job.config.tflite_int8``: the TFLite converter (default) or ai_edge_quantizer on
    the fp32 conversion. A QAT model always goes through the converter (its fake-quant ranges).
    ai_edge_quantizer writes weights as external (offset) buffers, which
    :func:`~edgeclf.runtime.tflite_metadata.add_metadata` cannot re-pack, so there the metadata is
    embedded in the fp32 model first and carried over by the quantizer.
    """
    meta = json.dumps(job.metadata).encode("utf-8")
    if (job.precision is Precision.INT8 and job.config.tflite_int8 is TfliteInt8Quantizer.AI_EDGE_QUANTIZER
            and not job.quantization_aware):
        data = aeq_int8(add_metadata(convert_keras(model, Precision.FP32, None), METADATA_KEY, meta),
                        job.representative)
        if read_metadata(data, METADATA_KEY) != meta:
            raise ExportError("ai_edge_quantizer dropped the embedded edgeclf metadata")
        return data
    return add_metadata(convert_keras(model, job.precision, job.representative, job.quantization_aware),
                        METADATA_KEY, meta)


def export(model, out_path: Path, job: ExportJob) -> Path:
    """Convert ``model`` at ``job.precision`` with ``job.metadata`` embedded, write ``out_path``; returns it.

    Raises:
        ExportError: ai_edge_quantizer lost the embedded metadata. Converter failures (unsupported
            ops) propagate as the converter raises them: a model from the registry converts, so
            they are bugs.
    """
    data = convert(model, job)
    out_path = Path(out_path)
    out_path.write_bytes(data)
    return out_path

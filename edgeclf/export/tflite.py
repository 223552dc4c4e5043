"""TFLite exporter: ``export(model, out_path, job) -> Path`` writes one ``.tflite`` file.

The file carries the edgeclf metadata (entry ``"edgeclf"``) and the standard TFLite Model Metadata
with its labels file (entry ``"TFLITE_METADATA"`` + appended archive), see
:mod:`edgeclf.export.metadata`, so a lone file runs with ``edgeclf predict`` and in MediaPipe Tasks.

Input float32 (1, H, W, C) RGB/grey pixels [0, 255], output float32 (1, num_classes) softmax
probabilities; a full-integer INT8 file has ``job.config.int8_io`` I/O instead: uint8 (default:
pixels as they are, scale 1 / zero point 0; output 0..255 = probability x 256), int8 (zero point
-128) or float32 (quantize / dequantize inside). The runtime resizes the batch dimension as needed.
"""

from __future__ import annotations

from pathlib import Path

from edgeclf.errors import ExportError
from edgeclf.export.config import ExportJob, Int8Io, Precision, TfliteInt8Quantizer
from edgeclf.export.metadata import add_entries, embed, pack_labels
from edgeclf.export.quantize import aeq_int8, convert_keras, selective_int8
from edgeclf.runtime.manifest import METADATA_KEY
from edgeclf.runtime.tflite_metadata import read_metadata
from edgeclf.runtime.tflite_model_metadata import STANDARD_METADATA_NAME


def convert(model, job: ExportJob, int8_io: Int8Io | None = None) -> bytes:
    """tf_keras model -> ``.tflite`` bytes at ``job.precision`` with ``job.metadata`` embedded.

    INT8 uses ``job.config.tflite_int8``: the TFLite converter (default) or ai_edge_quantizer on
    the fp32 conversion. A QAT model always goes through the converter (its fake-quant ranges).
    ``int8_io`` overrides ``job.config.int8_io`` (the int8 ONNX path converts an int8-I/O file).
    INT8 with ``job.float_layers`` (``--fallback``) is selective quantization
    (:func:`~edgeclf.export.quantize.selective_int8`): float32 I/O whatever ``int8_io`` says.
    ai_edge_quantizer writes weights as external (offset) buffers, which
    :func:`~edgeclf.runtime.tflite_metadata.add_metadata` cannot re-pack, so there both metadata
    entries are embedded in the fp32 model first and carried over by the quantizer; the labels
    archive is appended afterwards.

    Raises:
        ExportError: ai_edge_quantizer dropped an embedded metadata entry.
    """
    io_type = int8_io or job.config.int8_io
    if job.precision is Precision.INT8 and job.float_layers:
        return embed(selective_int8(model, job.representative, job.float_layers), job.metadata)
    if (job.precision is Precision.INT8 and job.config.tflite_int8 is TfliteInt8Quantizer.AI_EDGE_QUANTIZER
            and not job.quantization_aware):
        tagged = add_entries(convert_keras(model, Precision.FP32, None), job.metadata)
        data = aeq_int8(tagged, job.representative)
        for name in (METADATA_KEY, STANDARD_METADATA_NAME):
            if read_metadata(data, name) != read_metadata(tagged, name):
                raise ExportError(f"ai_edge_quantizer dropped the embedded '{name}' metadata")
        return pack_labels(data, job.metadata["labels"])
    return embed(convert_keras(model, job.precision, job.representative, job.quantization_aware, io_type),
                 job.metadata)


def export(model, out_path: Path, job: ExportJob) -> Path:
    """Convert ``model`` at ``job.precision`` with ``job.metadata`` embedded, write ``out_path``; returns it.

    Raises:
        ExportError: ai_edge_quantizer lost the embedded metadata. Converter failures (unsupported
            ops) propagate as the converter raises them; :mod:`edgeclf.export.pipeline` turns them
            into an ExportError naming the artifact.
    """
    data = convert(model, job)
    out_path = Path(out_path)
    out_path.write_bytes(data)
    return out_path

"""ONNX exporters: fp32 via tf2onnx (opset 17, dynamic batch) and int8, each ``export(model, out_path, job)``.

Every file passes ``onnx.checker.check_model`` and carries the edgeclf metadata in
``metadata_props["edgeclf"]``. Graph input ``image`` float32 (N, H, W, C) [0, 255], N dynamic;
output float32 (N, num_classes) probabilities.

int8 recipes (``ExportConfig.onnx_int8``, :class:`~edgeclf.export.config.OnnxInt8Recipe`):

* ``u8s8``, ``u8s8-reduce-range``, ``s8s8``, ``u8u8``: ``quant_pre_process`` then
  ``onnxruntime.quantization.quantize_static`` in QDQ format, per-channel weights, MinMax
  calibration on the representative training images through a ``CalibrationDataReader``; graph
  I/O stay float32. The final Softmax is excluded from quantization: with a Q/DQ pair on the graph
  output onnxruntime 1.31 failed at run time after a change of batch size ("Missing Input:
  probs_QuantizeLinear_Output"; measured). ``float_layers`` (``--fallback``) go to
  ``nodes_to_exclude`` too.
* ``from-tflite``: tf2onnx converts the int8 TFLite file (same quantization as model_int8.tflite);
  graph I/O are int8, their scale/zero point go into the metadata. Its int8 activations are then
  rewritten as uint8 and each weight gets its own constants (both exact; :mod:`edgeclf.export.onnx_qdq`),
  so onnxruntime fuses every layer and accepts ``session.x64quantprecision``.
* ``auto`` (default): :func:`~edgeclf.export.config.choose_onnx_recipe` for the export CPU's int8
  kernel class, onnxruntime's own advice (docs/quantization.md has the reasons and measurements).

Round 1 (AMD EPYC AVX2 without VNNI, ``cnn`` width 16): ``u8s8`` 0.39 ms vs 0.61 ms from-tflite vs
0.59 ms fp32, but +0.72 points drop (agreement 0.936) vs -0.05 from-tflite — on a CPU whose
U8S8 kernels saturate, which is the likely cause.

Sources: https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html ,
https://github.com/onnx/tensorflow-onnx (convert.from_keras / from_tflite).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from edgeclf._keras import quiet_native_logs, tf
from edgeclf.export.config import ExportJob, Int8Io, OnnxInt8Recipe, Precision, resolved_onnx_recipe
from edgeclf.export.onnx_qdq import activations_to_uint8, unshare_weight_constants
from edgeclf.runtime.manifest import METADATA_KEY

OPSET = 17
CALIBRATION_BATCH = 32


def _libs():
    try:
        import onnx
        import tf2onnx
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("ONNX export needs tf2onnx and onnx: pip install tf2onnx onnx") from exc
    return onnx, tf2onnx


def _set_metadata(model_proto, metadata: dict) -> None:
    for prop in list(model_proto.metadata_props):
        if prop.key == METADATA_KEY:
            model_proto.metadata_props.remove(prop)
    entry = model_proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)


def _save_checked(model_proto, out_path: Path, metadata: dict) -> Path:
    onnx, _ = _libs()
    _set_metadata(model_proto, metadata)
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(out_path))
    return Path(out_path)


def keras_to_onnx(model):
    """tf_keras model -> fp32 ``onnx.ModelProto`` (opset 17, input ``image`` with dynamic batch); node
    names are the same on every call for the same model."""
    _, tf2onnx = _libs()
    # tf2onnx numbers the ops it inserts from a process-wide counter (utils.make_name); restarting it
    # makes two conversions of one model name their nodes alike, so a --quant-report node name is a
    # valid nodes_to_exclude entry in the --fallback conversion
    tf2onnx.utils.INTERNAL_NAME = 1
    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    return proto


def export_fp32(model, out_path: Path, job: ExportJob) -> Path:
    """fp32 ONNX of ``model`` at ``out_path``."""
    return _save_checked(keras_to_onnx(model), out_path, job.metadata)


class _Reader:
    """onnxruntime ``CalibrationDataReader`` over float32 (N, H, W, C) images in batches of 32 (re-iterable)."""

    def __init__(self, input_name: str, images: np.ndarray) -> None:
        self._input_name, self._images = input_name, images
        self.rewind()

    def rewind(self) -> None:
        self._batches = iter([{self._input_name: self._images[i:i + CALIBRATION_BATCH].astype(np.float32)}
                              for i in range(0, len(self._images), CALIBRATION_BATCH)])

    def get_next(self):
        return next(self._batches, None)


def calibration_reader(input_name: str, images: np.ndarray):
    """A ``CalibrationDataReader`` (onnxruntime's base class) over ``images``, batches of 32."""
    from onnxruntime.quantization import CalibrationDataReader

    return type("CalibrationReader", (_Reader, CalibrationDataReader), {})(input_name, images)


#: (activation type, weight type, reduce_range) of each quantize_static recipe.
_QDQ_TYPES = {
    OnnxInt8Recipe.U8S8: ("QUInt8", "QInt8", False),
    OnnxInt8Recipe.U8S8_REDUCE_RANGE: ("QUInt8", "QInt8", True),
    OnnxInt8Recipe.S8S8: ("QInt8", "QInt8", False),
    OnnxInt8Recipe.U8U8: ("QUInt8", "QUInt8", False),
}
# No ``CalibMaxIntermediateOutputs``: in onnxruntime 1.32 MinMax calibration *discards* the collected
# outputs when that limit is reached (``collect_data`` calls ``clear_collected_data`` without computing
# the ranges), so 16 batches of 32 images (the default 500 calibration images) ended in "No data is
# collected" and larger sets were calibrated on their last batches only.


def float_onnx_for_quantization(model, path: Path) -> Path:
    """The fp32 ONNX of ``model`` after ``quant_pre_process`` (shape inference + optimization) at ``path``:
    the graph ``quantize_static`` quantizes and the float reference of ``qdq_loss_debug``."""
    onnx, _ = _libs()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw = Path(path).with_suffix(".raw.onnx")
    onnx.save(keras_to_onnx(model), str(raw))
    quant_pre_process(str(raw), str(path))
    raw.unlink()
    return Path(path)


def quantize_qdq(float_path: Path, out_path: Path, images: np.ndarray, recipe: OnnxInt8Recipe,
                 float_nodes: tuple[str, ...] = ()) -> Path:
    """onnxruntime ``quantize_static`` (QDQ, per-channel, MinMax) of a pre-processed fp32 ONNX file.

    Args:
        float_path: from :func:`float_onnx_for_quantization`.
        images: float32 (N, H, W, C) [0, 255] calibration images.
        recipe: one of the QDQ recipes (activation / weight types, reduce_range).
        float_nodes: node names kept in float (``nodes_to_exclude``), besides the final Softmax.

    Raises:
        ValueError: ``recipe`` is not a QDQ recipe.
    """
    onnx, _ = _libs()
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if recipe not in _QDQ_TYPES:
        raise ValueError(f"{recipe.value} is not an onnxruntime QDQ recipe")
    act, weight, reduce_range = _QDQ_TYPES[recipe]
    proto = onnx.load(str(float_path))
    softmax = [n.name for n in proto.graph.node if n.op_type == "Softmax"]
    quantize_static(str(float_path), str(out_path), calibration_reader(proto.graph.input[0].name, images),
                    quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                    activation_type=getattr(QuantType, act), weight_type=getattr(QuantType, weight),
                    nodes_to_exclude=softmax + list(float_nodes))
    return Path(out_path)


def _ort_qdq(model, out_path: Path, job: ExportJob, recipe: OnnxInt8Recipe) -> Path:
    onnx, _ = _libs()
    with tempfile.TemporaryDirectory(prefix="edgeclf-onnx-") as tmp:
        pre = float_onnx_for_quantization(model, Path(tmp) / "pre.onnx")
        q = quantize_qdq(pre, Path(tmp) / "int8.onnx", job.representative, recipe, job.float_layers)
        return _save_checked(onnx.load(str(q)), out_path, job.metadata)


def _from_tflite(model, out_path: Path, job: ExportJob) -> Path:
    from ai_edge_litert.interpreter import Interpreter

    from edgeclf.export.tflite import convert

    _, tf2onnx = _libs()
    tflite_bytes = convert(model, job, int8_io=Int8Io.INT8)  # int8 graph I/O whatever --int8-io says
    # (with float_layers the selective file has float I/O: no quantization parameters below)
    interp = Interpreter(model_content=tflite_bytes)
    meta = dict(job.metadata)
    for key, detail in (("input_quantization", interp.get_input_details()[0]),
                        ("output_quantization", interp.get_output_details()[0])):
        scale, zero_point = detail["quantization"]
        if np.dtype(detail["dtype"]) in (np.dtype(np.int8), np.dtype(np.uint8)):
            meta[key] = {"scale": float(scale), "zero_point": int(zero_point)}
    with tempfile.TemporaryDirectory(prefix="edgeclf-onnx-") as tmp:
        src = Path(tmp) / "int8.tflite"
        src.write_bytes(tflite_bytes)
        with quiet_native_logs():  # tf2onnx runs TF's own tf.lite.Interpreter, which prints an XNNPACK notice
            proto, _ = tf2onnx.convert.from_tflite(str(src), opset=OPSET)
    activations_to_uint8(proto)  # else onnxruntime leaves layers with shared inputs in float (onnx_qdq.py)
    unshare_weight_constants(proto)  # else onnxruntime refuses session.x64quantprecision (AVX2: exact kernels)
    return _save_checked(proto, out_path, meta)


def export_int8(model, out_path: Path, job: ExportJob) -> Path:
    """int8 ONNX of ``model`` at ``out_path`` by the resolved ``job.config.onnx_int8`` recipe (a QAT
    model always from TFLite); ``job.float_layers`` are kept in float."""
    if job.precision is not Precision.INT8:
        raise ValueError(f"export_int8 called for {job.precision.value}")
    recipe = resolved_onnx_recipe(job.config)
    if job.quantization_aware or recipe is OnnxInt8Recipe.FROM_TFLITE:
        return _from_tflite(model, out_path, job)
    return _ort_qdq(model, out_path, job, recipe)

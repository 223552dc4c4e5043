"""``--quant-report``: per-layer quantization error of an int8 artifact against the float model.

Computed on the calibration (representative) images with the tools made for it:

* TFLite (and the ``from-tflite`` ONNX, the same quantized graph): ``tf.lite.experimental.QuantizationDebugger``
  on the converter's post-training int8. Each quantized op's output is compared with the float op
  run on the *same* (dequantized) inputs, so the error is that layer's own (``scope = "layer"``).
  The debug model is built once from the converter, then re-opened from its bytes so the
  interpreter preserves all tensors for ``layer_direct_compare_metrics`` (SNR needs the float signal).
* ONNX QDQ recipes: ``onnxruntime.quantization.qdq_loss_debug``: both the pre-processed float graph
  and the QDQ graph are augmented to output every activation
  (``modify_model_output_intermediate_tensors``), run with graph optimizations off, and matched
  per tensor (``create_activation_matching``); the error is the QDQ tensor against the float
  model's same tensor, so it accumulates from the input (``scope = "cumulative"``). Batches are
  streamed (sums of squares per tensor), so memory does not grow with the number of images.
  With optimizations off Q/DQ run as float ops: the report shows quantization noise, not what a
  CPU's int8 kernels add (e.g. VPMADDUBSW saturation on x86 without VNNI).

SNR in dB: 10 log10(sum(float^2) / sum((quantized - float)^2)), higher is better (~6 dB per bit;
an 8-bit layer is typically 20-40 dB). MSE in the layer's output units.

Sources: https://www.tensorflow.org/lite/performance/quantization_debugger ,
onnxruntime ``onnxruntime/quantization/qdq_loss_debug.py``.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from pathlib import Path

import numpy as np

from edgeclf.export.config import ExportJob, Format, OnnxInt8Recipe, resolved_onnx_recipe
from edgeclf.runtime.manifest import LayerError

REPORT_COLUMNS = ("file", "layer", "op_type", "scope", "snr_db", "mse")
WORST_N = 5
_EPS = 1e-20


def snr_db(signal_power: float, noise_power: float) -> float:
    """10 log10(signal / noise) from sums of squares, capped at 200 dB for a noise-free layer."""
    return round(min(200.0, 10.0 * math.log10(max(signal_power, _EPS) / max(noise_power, _EPS))), 3)


def _direct_snr(float_values, quant_values, scale, zero_point) -> float:
    """QuantizationDebugger ``layer_direct_compare_metrics`` function: SNR (dB) of one example."""
    f = np.asarray(float_values, dtype=np.float64)
    deq = (np.asarray(quant_values).astype(np.int32) - int(zero_point)) * float(scale)
    return snr_db(float(np.sum(f * f)), float(np.sum((f - deq) ** 2)))


def tflite_layer_errors(model, representative: np.ndarray) -> list[LayerError]:
    """Per-layer errors of the converter's int8 quantization of a tf_keras model, in graph order.

    ``layer`` is the op's output tensor name (what ``QuantizationDebugOptions(denylisted_nodes=...)``
    takes), ``op_type`` the TFLite op (CONV_2D, ...). ``representative``: float32 (N, H, W, C) [0, 255].
    """
    from edgeclf._keras import tf
    from edgeclf.export.quantize import keras_converter, representative_dataset

    debug = tf.lite.experimental
    with keras_converter(model) as converter:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(representative)
        debug_model = debug.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset(representative[:1])).get_debug_quantized_model()
        debugger = debug.QuantizationDebugger(
            quant_debug_model_content=debug_model, debug_dataset=representative_dataset(representative),
            debug_options=debug.QuantizationDebugOptions(layer_direct_compare_metrics={"snr_db": _direct_snr}))
        debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    rows.sort(key=lambda r: int(r["tensor_idx"]))
    return [LayerError(layer=r["tensor_name"], op_type=r["op_name"], snr_db=round(float(r["snr_db"]), 3),
                       mse=float(f"{float(r['mean_squared_error']):.6g}"), scope="layer") for r in rows]


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # as qdq_loss_debug does
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _saved(sess, outputs) -> dict[str, np.ndarray]:
    from onnxruntime.quantization.qdq_loss_debug import _TENSOR_SAVE_POSTFIX

    return {o.name[:-len(_TENSOR_SAVE_POSTFIX)]: v for o, v in zip(sess.get_outputs(), outputs)
            if o.name.endswith(_TENSOR_SAVE_POSTFIX)}


def onnx_layer_errors(model, representative: np.ndarray, recipe: OnnxInt8Recipe) -> list[LayerError]:
    """Per-layer errors of an onnxruntime QDQ ``recipe`` of a tf_keras model, in graph order.

    ``layer`` is the ONNX node that produces the tensor in the QDQ graph (what ``nodes_to_exclude``
    takes). Tensors without a Q/DQ pair or without a producing node (the graph input) have no row.
    """
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as qdb

    from edgeclf.export.onnx import CALIBRATION_BATCH, float_onnx_for_quantization, quantize_qdq

    with tempfile.TemporaryDirectory(prefix="edgeclf-qdq-debug-") as tmp:
        pre = float_onnx_for_quantization(model, Path(tmp) / "float.onnx")
        q = quantize_qdq(pre, Path(tmp) / "qdq.onnx", representative, recipe)
        graph = onnx.load(str(pre)).graph
        # the op that computes a tensor in the QDQ graph (a Relu after a Conv is folded into the Conv's
        # output range there, so the Conv is the layer to keep in float)
        q_nodes = [n for n in onnx.load(str(q)).graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
        producer = {out: node for node in q_nodes for out in node.output}
        order = {name: i for i, node in enumerate(q_nodes) for name in node.output}
        for src in (pre, q):
            qdb.modify_model_output_intermediate_tensors(str(src), str(src.with_suffix(".aug.onnx")))
        f_sess, q_sess = _session(pre.with_suffix(".aug.onnx")), _session(q.with_suffix(".aug.onnx"))
        name = graph.input[0].name
        sums: dict[str, list[float]] = {}
        for i in range(0, len(representative), CALIBRATION_BATCH):
            feed = {name: representative[i:i + CALIBRATION_BATCH].astype(np.float32)}
            f_out = _saved(f_sess, f_sess.run(None, feed))
            q_out = _saved(q_sess, q_sess.run(None, feed))
            match = qdb.create_activation_matching({k: [v] for k, v in q_out.items()},
                                                   {k: [v] for k, v in f_out.items()})
            for tensor, m in match.items():
                if tensor not in producer or "float" not in m:
                    continue
                f = np.asarray(m["float"][0], dtype=np.float64)
                d = np.asarray(m["post_qdq"][0], dtype=np.float64) - f
                acc = sums.setdefault(tensor, [0.0, 0.0, 0.0])
                acc[0] += float(np.sum(f * f))
                acc[1] += float(np.sum(d * d))
                acc[2] += f.size
    rows = sorted(sums.items(), key=lambda kv: order[kv[0]])
    return [LayerError(layer=producer[t].name, op_type=producer[t].op_type, snr_db=snr_db(s, n),
                       mse=float(f"{n / max(count, 1):.6g}"), scope="cumulative") for t, (s, n, count) in rows]


def layer_errors(model, fmt: Format, job: ExportJob) -> list[LayerError]:
    """Per-layer errors of the int8 artifact ``(fmt, job)`` would make: the TFLite debugger for
    .tflite and the from-tflite .onnx, qdq_loss_debug for the onnxruntime QDQ recipes."""
    recipe = resolved_onnx_recipe(job.config)
    if fmt is Format.TFLITE or recipe is OnnxInt8Recipe.FROM_TFLITE:
        return tflite_layer_errors(model, job.representative)
    return onnx_layer_errors(model, job.representative, recipe)


def worst_layers(errors: list[LayerError], n: int | None = WORST_N) -> list[LayerError]:
    """The ``n`` (all if None) layers with the lowest SNR, worst first (ties: graph order)."""
    ranked = sorted(enumerate(errors), key=lambda ie: (ie[1].snr_db, ie[0]))
    return [e for _, e in ranked][:n]


def report_paths(model_dir: Path, file_name: str) -> tuple[Path, Path]:
    """``MODEL_DIR/quant_report_<file with . as _>.csv`` and ``.png``."""
    stem = "quant_report_" + file_name.replace(".", "_")
    return Path(model_dir) / f"{stem}.csv", Path(model_dir) / f"{stem}.png"


def write_report(model_dir: Path, file_name: str, errors: list[LayerError]) -> tuple[Path, Path]:
    """Write the CSV (:data:`REPORT_COLUMNS`, one row per quantized layer, graph order) and a PNG bar
    chart of SNR per layer (the worst :data:`WORST_N` in red), atomically. Returns (csv, png)."""
    from edgeclf._io import write_text
    from edgeclf._mpl import pyplot, save_png

    csv_path, png_path = report_paths(model_dir, file_name)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for e in errors:
        writer.writerow((file_name, e.layer, e.op_type, e.scope, f"{e.snr_db:.3f}", f"{e.mse:.6g}"))
    write_text(csv_path, buf.getvalue())
    worst = {e.layer for e in worst_layers(errors)}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.22 * len(errors) + 1)))
    y = np.arange(len(errors))
    ax.barh(y, [e.snr_db for e in errors], color=["#d62728" if e.layer in worst else "#1f77b4" for e in errors])
    ax.set_yticks(y, [f"{e.layer[-40:]} ({e.op_type})" for e in errors], fontsize=7)
    ax.invert_yaxis()
    scope = errors[0].scope if errors else "layer"
    ax.set_xlabel(f"SNR (dB), {scope} error vs float; red: worst {WORST_N}")
    ax.set_title(f"{file_name}: per-layer int8 quantization error")
    save_png(fig, png_path)
    return csv_path, png_path

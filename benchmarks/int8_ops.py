"""What runs in int8 and what stays float in a model directory's int8 TFLite and ONNX files.

Usage: python benchmarks/int8_ops.py MODEL_DIR [MODEL_DIR ...]   (prints one JSON object per directory)

For ``model_int8.tflite`` (LiteRT interpreter, ``ai_edge_litert``): the op count by type, the
float32 tensors, and the ops touching a float32 tensor (input or output) other than the graph's
own QUANTIZE/DEQUANTIZE at its I/O. For ``model_int8.onnx``: the node count by type of the file
(QDQ: ``QuantizeLinear``/``DequantizeLinear`` around every compute node), and of the graph
onnxruntime actually runs on its CPU execution provider after ``ORT_ENABLE_ALL`` graph
optimisation (``SessionOptions.optimized_model_filepath``): int8 kernels (``QLinear*``,
``QGemm``, ``NhwcMaxPool`` between int8 tensors) vs float compute nodes left between a
``DequantizeLinear`` and a ``QuantizeLinear`` (they compute in float32). The manifest's
validation (top-1 agreement with the float model on the held-out images) is copied in.

Runtime libraries only (no TensorFlow): ai_edge_litert, onnx, onnxruntime.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

#: ONNX node types that only move or reshape data, or are the quantization boundary itself.
_PLUMBING = {"QuantizeLinear", "DequantizeLinear", "Transpose", "Reshape", "Shape", "Gather", "Squeeze",
             "Unsqueeze", "Concat", "Slice", "Cast", "Identity", "Constant", "Flatten"}


def tflite_report(path: Path) -> dict:
    """Op counts and float32 use of an int8 ``.tflite`` file."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # noqa: SLF001 - the only op-list API of the interpreter
    float_ops = Counter(op["op_name"] for op in ops
                        if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE")
                        and any(dtypes.get(i) == "float32" for i in [*op["inputs"], *op["outputs"]] if i >= 0))
    return {"ops": len(ops), "op_types": dict(Counter(op["op_name"] for op in ops).most_common()),
            "float32_tensors": sum(d == "float32" for d in dtypes.values()),
            "ops_on_float32": dict(float_ops)}


def onnx_report(path: Path) -> dict:
    """Node counts of an int8 ``.onnx`` file and of onnxruntime's optimised CPU graph."""
    import onnx
    import onnxruntime as ort

    file_nodes = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        optimized = Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    int8 = {k: v for k, v in optimized.items() if k.startswith("QLinear") or k in ("QGemm", "NhwcMaxPool")}
    float_compute = {k: v for k, v in optimized.items() if k not in int8 and k not in _PLUMBING}
    return {"file_nodes": sum(file_nodes.values()), "file_node_types": dict(file_nodes.most_common()),
            "ort_int8_kernels": dict(sorted(int8.items(), key=lambda kv: -kv[1])),
            "ort_float_compute": dict(sorted(float_compute.items(), key=lambda kv: -kv[1])),
            "ort_quantize_linear": optimized.get("QuantizeLinear", 0),
            "ort_dequantize_linear": optimized.get("DequantizeLinear", 0)}


def report(model_dir: Path) -> dict:
    """Both files' reports and the manifest's validation records for ``model_dir``."""
    out: dict = {"model_dir": str(model_dir)}
    manifest = json.loads((model_dir / "manifest.json").read_text())
    for entry in manifest.get("artifacts", []):
        if entry.get("validation"):
            out.setdefault("validation", {})[entry["file"]] = entry["validation"]
    if (model_dir / "model_int8.tflite").is_file():
        out["tflite"] = tflite_report(model_dir / "model_int8.tflite")
    if (model_dir / "model_int8.onnx").is_file():
        out["onnx"] = onnx_report(model_dir / "model_int8.onnx")
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__.split("\n\n")[1])
    for arg in sys.argv[1:]:
        print(json.dumps(report(Path(arg)), indent=1))

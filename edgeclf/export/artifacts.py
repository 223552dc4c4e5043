"""Facts about artifact files for the manifest: sha256, sizes, int8 weight tensors, tool versions.

TF-free: reads ``.tflite`` files with LiteRT and the flatbuffer schema, ``.onnx`` files with onnx.
"""

from __future__ import annotations

import gzip
import hashlib
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

TOOLS = {"tensorflow": "tensorflow", "tf_keras": "tf-keras", "tfmot": "tensorflow-model-optimization",
         "tf2onnx": "tf2onnx", "onnx": "onnx", "onnxruntime": "onnxruntime", "ai_edge_litert": "ai-edge-litert",
         "ai_edge_quantizer": "ai-edge-quantizer"}


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def gzip_size(path: Path) -> int:
    """Size in bytes of the file gzipped at level 9 (what a download or OTA update costs)."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0))


def tool_versions() -> dict[str, str]:
    """Installed versions of the export tool chain (distribution metadata; nothing is imported)."""
    out = {}
    for key, dist in TOOLS.items():
        try:
            out[key] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[key] = "not installed"
    return out


def utc_now() -> str:
    """ISO-8601 UTC timestamp, seconds resolution."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _tflite_weights(path: Path) -> list[np.ndarray]:
    """int8/uint8 constant (weight) tensors of a ``.tflite`` file.

    Types come from the interpreter's ``get_tensor_details``; a tensor is a constant when its
    flatbuffer buffer holds data (activations have empty buffers).
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    data = Path(path).read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    constant = {}
    for i in range(graph.TensorsLength()):
        buf = model.Buffers(graph.Tensors(i).Buffer())
        if not buf.DataIsNone() and buf.DataLength() > 0:
            constant[i] = buf.DataAsNumpy()
    out = []
    for d in Interpreter(model_content=data).get_tensor_details():
        dtype = np.dtype(d["dtype"])
        if d["index"] in constant and dtype in (np.dtype(np.int8), np.dtype(np.uint8)):
            out.append(constant[d["index"]].view(dtype).reshape(tuple(d["shape"])))
    return out


def _onnx_weights(path: Path) -> list[np.ndarray]:
    """int8/uint8 initializers of an ``.onnx`` file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return [numpy_helper.to_array(t) for t in model.graph.initializer
            if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]


def int8_weight_report(path: Path) -> dict:
    """Count the int8/uint8 weight tensors of an artifact and the zeros in its int8 kernels.

    Kernels are int8 tensors with >= 2 dimensions (conv/dense weights; zero points and scalars are
    left out), so ``int8_kernel_zero_fraction`` is the sparsity that survived quantization.

    Returns:
        {"int8_weight_tensors": int, "int8_kernel_params": int, "int8_kernel_zero_fraction": float}
    """
    path = Path(path)
    weights = _tflite_weights(path) if path.suffix == ".tflite" else _onnx_weights(path)
    kernels = [w for w in weights if w.dtype == np.int8 and w.ndim >= 2]
    n = int(sum(w.size for w in kernels))
    zeros = int(sum(int(np.count_nonzero(w == 0)) for w in kernels))
    return {"int8_weight_tensors": len(weights), "int8_kernel_params": n,
            "int8_kernel_zero_fraction": round(zeros / n, 4) if n else 0.0}

"""Facts about artifact files for the manifest: int8 weight tensors and the export time stamp.

TF-free: reads ``.tflite`` files with LiteRT and the flatbuffer schema, ``.onnx`` files with onnx.
(sha256 and gzip size: :mod:`edgeclf._io`; tool versions: :mod:`edgeclf._versions`.)
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgeclf.runtime.manifest import Int8Weights


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


def int8_weight_report(path: Path) -> Int8Weights:
    """Count the int8/uint8 weight tensors of an artifact and the zeros in its int8 kernels.

    Kernels are int8 or uint8 tensors with >= 2 dimensions (conv/dense weights; zero points and
    scalars are left out; uint8 kernels come from ``--onnx-int8 u8u8``). ``int8_kernel_zero_fraction``
    is the fraction of zeros in the int8 kernels (symmetric, so 0 is the real 0): the sparsity that
    survived quantization; uint8 kernels, whose real 0 is their zero point, are not counted in it.

    Returns:
        Int8Weights: tensor count, kernel parameter count, fraction of kernel zeros (4 decimals).
    """
    path = Path(path)
    weights = _tflite_weights(path) if path.suffix == ".tflite" else _onnx_weights(path)
    kernels = [w for w in weights if w.ndim >= 2]
    signed = [w for w in kernels if w.dtype == np.int8]
    n, n_signed = int(sum(w.size for w in kernels)), int(sum(w.size for w in signed))
    zeros = int(sum(int(np.count_nonzero(w == 0)) for w in signed))
    return Int8Weights(int8_weight_tensors=len(weights), int8_kernel_params=n,
                       int8_kernel_zero_fraction=round(zeros / n_signed, 4) if n_signed else 0.0)

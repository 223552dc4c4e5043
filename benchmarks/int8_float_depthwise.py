"""Does keeping the depthwise convolutions in float make a mobilenet_v2 int8 TFLite faster?

Usage: ``python benchmarks/int8_float_depthwise.py MODEL_DIR --data DATA [--rounds 20] [--calls 50]
[--threads 1] [--limit 2500] [--out DIR]``.

Why: the per-layer profile (``litert_layer_profile.py``; ``results/mobilenet_v2-speed-xeon/layers``)
found XNNPACK's int8 depthwise kernels no faster than its fp32 ones (0.78-0.81x on a Xeon: no VNNI
depthwise kernel), while the 1x1 convolutions gain 2.4-2.7x. So a file whose depthwise layers stay
float (TFLite selective quantization, ``QuantizationDebugOptions(denylisted_nodes=...)``, the
mechanism of ``edgeclf export --fallback``) might be faster than the all-int8 one, at the cost of a
quantize/dequantize pair around each of them.

Builds from MODEL_DIR's ``model.keras`` (flattened as export does) three files with the same
converter, calibrated on ``--limit`` stratified training images' first 200:
``fp32`` (no quantization), ``int8`` (selective quantization with nothing kept float: float32 I/O,
like the candidate) and ``int8_dw_float`` (every DEPTHWISE_CONV_2D output denylisted). Times them
batch-1 interleaved in one process (``litert_speedup.interleaved``: ``--rounds`` rounds of ``--calls``
calls each, order alternating, default op resolver = XNNPACK) and scores top-1 on the test images that
``--limit`` selects (limit / 5). Writes ``result.json`` and the files into ``--out`` (default
``MODEL_DIR/int8_float_depthwise``). Imports TensorFlow; run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from benchmarks.litert_speedup import batch1_call, interleaved  # noqa: E402
from edgeclf.data import DataConfig, load_dataset  # noqa: E402
from edgeclf.export.config import Precision  # noqa: E402
from edgeclf.export.flatten import flatten_model  # noqa: E402
from edgeclf.export.quantize import convert_keras, selective_int8  # noqa: E402
from edgeclf.models.io import load_keras_model  # noqa: E402


def op_outputs(tflite: bytes, op_name: str) -> list[str]:
    """Output tensor names of every ``op_name`` operator (e.g. DEPTHWISE_CONV_2D) of a .tflite."""
    it = Interpreter(model_content=tflite)
    names = {t["index"]: t["name"] for t in it.get_tensor_details()}
    return [names[o] for op in it._get_ops_details() if op["op_name"] == op_name for o in op["outputs"]]


def float_op_count(tflite: bytes, op_name: str) -> tuple[int, int]:
    """(float32-input count, total) of the ``op_name`` operators of a .tflite."""
    it = Interpreter(model_content=tflite)
    dtypes = {t["index"]: t["dtype"] for t in it.get_tensor_details()}
    ops = [op for op in it._get_ops_details() if op["op_name"] == op_name]
    return sum(dtypes[op["inputs"][0]] == np.float32 for op in ops), len(ops)


def top1(tflite: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 of a float32-input .tflite on uint8 (N, H, W, C) images ``x`` with labels ``y``."""
    it = Interpreter(model_content=tflite, num_threads=2)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    right = 0
    for img, label in zip(x, y):
        it.set_tensor(inp["index"], img[None].astype(inp["dtype"]))
        it.invoke()
        right += int(np.argmax(it.get_tensor(out["index"])[0]) == label)
    return right / len(y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=2500, help="training images loaded (test images: limit / 5)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    out = a.out or a.model_dir / "int8_float_depthwise"
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(DataConfig(source=a.data, val_split=0.0, limit=a.limit), progress=False)
    rep = ds.train.x[:200].astype(np.float32)
    model = flatten_model(load_keras_model(a.model_dir))
    files = {"fp32": convert_keras(model, Precision.FP32, None)}
    depthwise = op_outputs(files["fp32"], "DEPTHWISE_CONV_2D")
    files["int8"] = selective_int8(model, rep, ())
    files["int8_dw_float"] = selective_int8(model, rep, tuple(depthwise))
    for name, data in files.items():
        (out / f"{name}.tflite").write_bytes(data)
    times = interleaved({n: batch1_call(out / f"{n}.tflite", a.threads) for n in files}, a.rounds, a.calls, warmup=30)
    p50 = {n: float(np.median(np.concatenate(t))) for n, t in times.items()}
    per_round = {n: [float(np.median(r)) for r in t] for n, t in times.items()}
    ratio = {n: round(float(np.median([f / q for f, q in zip(per_round["fp32"], per_round[n])])), 3) for n in files}
    res = {
        "model_dir": str(a.model_dir), "depthwise_layers": len(depthwise),
        "float_depthwise_in_file": {n: list(float_op_count(d, "DEPTHWISE_CONV_2D")) for n, d in files.items()},
        "size_bytes": {n: len(d) for n, d in files.items()},
        "p50_ms": {n: round(v, 4) for n, v in p50.items()},
        "speedup_vs_fp32_median_of_rounds": ratio,
        "top1": {n: round(top1(d, ds.test.x, ds.test.labels), 4) for n, d in files.items()},
        "n_test": len(ds.test), "rounds": a.rounds, "calls": a.calls, "threads": a.threads,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    text = json.dumps(res, indent=1)
    print(text)
    (out / "result.json").write_text(text + "\n")


if __name__ == "__main__":
    main()

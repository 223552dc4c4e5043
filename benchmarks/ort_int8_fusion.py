"""onnxruntime batch-1 latency of a tf2onnx int8 file before and after edgeclf's QDQ rewrite, and of fp32.

Usage: ``python benchmarks/ort_int8_fusion.py MODEL_DIR [--int8 model_qat_int8.onnx] [--rounds 30]
[--calls 50] [--threads 1] [--json OUT]``

The int8 file is taken as it is in MODEL_DIR (a ``from-tflite`` or QAT ``.onnx``); if it was written
before the rewrite existed, "before" is that file and "after" is the same file passed through
:func:`edgeclf.export.onnx_qdq.activations_to_uint8` and ``unshare_weight_constants`` in memory
(same weights, same quantization parameters). If it already carries the rewrite, "before" is the
file and "after" is skipped. For each file: the op counts of onnxruntime's optimised graph (how
many Conv ran fused as ``QLinearConv``) and the batch-1 latency, all files timed interleaved in one
process (``benchmarks/litert_speedup.interleaved``: VM drift cancels out), ``--threads`` intra-op
threads, random inputs of the input dtype. Also the top-1 agreement of before/after on those inputs.

Runtime libraries only (onnxruntime, onnx); no TensorFlow. Nothing else may run while it times.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.litert_speedup import interleaved  # noqa: E402
from edgeclf._machine import machine_facts  # noqa: E402
from edgeclf.export.onnx_qdq import activations_to_uint8, unshare_weight_constants  # noqa: E402


def _session(model_bytes: bytes, threads: int, optimized: Path | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _op_counts(model_bytes: bytes) -> dict[str, int]:
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "opt.onnx"
        _session(model_bytes, 1, path)
        return dict(collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node).most_common())


def _input(sess, batch: int = 1, seed: int = 0) -> np.ndarray:
    inp = sess.get_inputs()[0]
    shape = [batch if not isinstance(d, int) else d for d in inp.shape]
    rng = np.random.default_rng(seed)
    if inp.type == "tensor(int8)":
        return rng.integers(-128, 128, shape).astype(np.int8)
    if inp.type == "tensor(uint8)":
        return rng.integers(0, 256, shape).astype(np.uint8)
    return rng.uniform(0, 255, shape).astype(np.float32)


def main() -> None:
    import onnx

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--int8", default="model_qat_int8.onnx", help="the int8 file's name in MODEL_DIR")
    ap.add_argument("--fp32", default="model_fp32.onnx")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    before = (args.model_dir / args.int8).read_bytes()
    proto = onnx.load_from_string(before)
    rewritten = activations_to_uint8(proto) + unshare_weight_constants(proto)
    models = {"fp32": (args.model_dir / args.fp32).read_bytes(), "int8 before": before}
    if rewritten:
        models["int8 after"] = proto.SerializeToString()
    sessions = {name: _session(b, args.threads) for name, b in models.items()}
    inputs = {name: _input(s) for name, s in sessions.items()}
    out_names = {name: s.get_outputs()[0].name for name, s in sessions.items()}

    def caller(name):
        s, feed = sessions[name], {sessions[name].get_inputs()[0].name: inputs[name]}
        return lambda: s.run([out_names[name]], feed)

    result = {"model_dir": str(args.model_dir), "int8_file": args.int8, "rewrites": rewritten,
              "op_counts": {name: _op_counts(b) for name, b in models.items()}}
    if rewritten:  # same random int8 inputs through both int8 files
        x = _input(sessions["int8 before"], batch=64, seed=1)
        feed = {sessions["int8 before"].get_inputs()[0].name: x}
        a = sessions["int8 before"].run(None, feed)[0].argmax(1)
        b = sessions["int8 after"].run(None, feed)[0].argmax(1)
        result["top1_agreement_before_after_random_inputs"] = float(np.mean(a == b))
    times = interleaved({name: caller(name) for name in models}, args.rounds, args.calls, warmup=30)
    p50 = {name: float(np.median(np.concatenate(t))) for name, t in times.items()}
    result["p50_ms"] = {k: round(v, 4) for k, v in p50.items()}
    result["speedup_over_fp32"] = {k: round(p50["fp32"] / v, 3) for k, v in p50.items() if k != "fp32"}
    result.update(rounds=args.rounds, calls=args.calls, threads=args.threads, machine=machine_facts(args.threads))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

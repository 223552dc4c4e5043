"""Does LiteRT run MODEL_DIR's int8 file in XNNPACK? Batch-1 latency of model_fp32.tflite and
model_int8.tflite with the default delegate (XNNPACK) and without it (TFLite's builtin kernels).

Usage: ``python benchmarks/litert_delegate_probe.py MODEL_DIR``. 1 thread, random uint8 pixels
(cast to the input dtype), 30 warm-up calls, then p50 / p95 of 300 timed set_tensor + invoke calls.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

RESOLVERS = (("default (XNNPACK)", OpResolverType.AUTO),
             ("builtin, no delegate", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))


def main(model_dir: str) -> None:
    for f in ("model_fp32.tflite", "model_int8.tflite"):
        for name, kind in RESOLVERS:
            it = Interpreter(model_path=f"{model_dir}/{f}", num_threads=1, experimental_op_resolver_type=kind)
            it.allocate_tensors()
            inp = it.get_input_details()[0]
            x = np.random.default_rng(0).integers(0, 256, inp["shape"]).astype(inp["dtype"])
            for _ in range(30):
                it.set_tensor(inp["index"], x)
                it.invoke()
            times = []
            for _ in range(300):
                t0 = time.perf_counter()
                it.set_tensor(inp["index"], x)
                it.invoke()
                times.append(time.perf_counter() - t0)
            print(f"{f:20s} {name:22s} p50 {np.median(times) * 1e3:.3f} ms  p95 {np.percentile(times, 95) * 1e3:.3f} ms")


if __name__ == "__main__":
    main(sys.argv[1])

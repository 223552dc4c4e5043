"""Does LiteRT run MODEL_DIR's int8 file in XNNPACK? Batch-1 latency of model_fp32.tflite and
model_int8.tflite with the default delegate (XNNPACK) and without it (TFLite's builtin kernels).

Usage: ``python benchmarks/litert_delegate_probe.py MODEL_DIR``. 1 thread, random uint8 pixels
(cast to the input dtype), 30 warm-up calls, then p50 / p95 of 300 timed set_tensor + invoke calls.
"""

from __future__ import annotations

import sys

import numpy as np
from ai_edge_litert.interpreter import OpResolverType
from litert_speedup import batch1_call, timed_ms

RESOLVERS = (("default (XNNPACK)", OpResolverType.AUTO),
             ("builtin, no delegate", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))


def main(model_dir: str) -> None:
    for f in ("model_fp32.tflite", "model_int8.tflite"):
        for name, kind in RESOLVERS:
            ms = timed_ms(batch1_call(f"{model_dir}/{f}", 1, kind), 300, warmup=30)
            print(f"{f:20s} {name:22s} p50 {np.median(ms):.3f} ms  p95 {np.percentile(ms, 95):.3f} ms")


if __name__ == "__main__":
    main(sys.argv[1])

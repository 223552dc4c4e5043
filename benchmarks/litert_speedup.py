"""LiteRT int8 speed-up over fp32 for one model directory, measured interleaved so that VM drift
cancels out: the batch-1 latency ratio p50(model_fp32.tflite) / p50(model_int8.tflite).

Usage: ``python benchmarks/litert_speedup.py MODEL_DIR [--rounds 30] [--calls 50] [--threads 1]
[--int8 model_int8.tflite] [--json OUT]`` (``--int8 model_qat_int8.tflite`` for a ``--qat`` export).

Why: on a shared VM the same file's latency moves by up to 1.6x between runs an hour apart
(``benchmarks/results/mobilenet_v2-speed-xeon/README.md``), and ``edgeclf bench`` times one artifact
after another, so its ratio mixes the two files' speed with the machine's drift. Here both
interpreters are loaded in one process (default op resolver = XNNPACK, ``--threads`` threads); each
round times ``--calls`` batch-1 ``set_tensor`` + ``invoke`` calls of one file, then of the other
(the order alternates between rounds), after 30 warm-up calls each. Reported: the p50 of every call
of each file, and the median and 10th/90th percentiles of the per-round ratio of p50s (the
drift-free estimate). Input: random uint8 pixels cast to the input dtype (latency does not depend
on the pixel values).

Runtime library only (``ai_edge_litert``); no TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from edgeclf.bench.timing import time_calls  # noqa: E402  (bench's timing loop; no TensorFlow)


def batch1_call(path: Path, threads: int, resolver: OpResolverType = OpResolverType.AUTO):
    """A no-argument function running one batch-1 ``set_tensor`` + ``invoke`` of the .tflite at ``path``
    (random uint8 pixels cast to its input dtype), ``threads`` threads, op resolver ``resolver``."""
    it = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    x = np.random.default_rng(0).integers(0, 256, inp["shape"]).astype(inp["dtype"])

    def call() -> None:
        it.set_tensor(inp["index"], x)
        it.invoke()
    return call


def timed_ms(call, n: int, warmup: int = 0) -> np.ndarray:
    """float64 (n,) milliseconds of ``n`` timed calls of ``call`` after ``warmup`` untimed ones."""
    return time_calls(call, warmup, 0.0, n, 0.0, float("inf"))


def interleaved(calls_by_name: dict, rounds: int, calls: int, warmup: int) -> dict[str, list[np.ndarray]]:
    """Time several no-argument functions interleaved: ``warmup`` untimed calls each, then ``rounds``
    rounds of ``calls`` timed calls of each in turn (order reversed every other round).

    Returns name -> one float64 (calls,) array of milliseconds per round."""
    names = list(calls_by_name)
    for fn in calls_by_name.values():
        timed_ms(fn, 1, warmup=warmup)
    times: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            times[n].append(timed_ms(calls_by_name[n], calls))
    return times


def measure(model_dir: Path, rounds: int = 30, calls: int = 50, threads: int = 1,
            files: tuple[str, str] = ("model_fp32.tflite", "model_int8.tflite")) -> dict:
    """Interleaved batch-1 latency of MODEL_DIR's fp32 and int8 TFLite files (``files``: their names).

    Returns a dict: ``p50_ms`` (file -> p50 over all timed calls, ms), ``ratio_p50_of_rounds`` (median
    of the per-round fp32/int8 p50 ratio), ``ratio_p10``/``ratio_p90`` (10th/90th percentile of those
    ratios), ``rounds``, ``calls``, ``threads``, ``load_average`` (1/5/15 min, at the end).
    Raises FileNotFoundError when either file is missing.
    """
    for f in files:
        if not (model_dir / f).is_file():
            raise FileNotFoundError(f"{model_dir / f}: no such file (export it first: edgeclf export)")
    times = interleaved({f: batch1_call(model_dir / f, threads) for f in files}, rounds, calls, warmup=30)
    ratios = [float(np.median(a)) / float(np.median(b)) for a, b in zip(times[files[0]], times[files[1]])]
    return {"p50_ms": {f: round(float(np.median(np.concatenate(t))), 4) for f, t in times.items()},
            "ratio_p50_of_rounds": round(float(np.median(ratios)), 3),
            "ratio_p10": round(float(np.percentile(ratios, 10)), 3),
            "ratio_p90": round(float(np.percentile(ratios, 90)), 3),
            "rounds": rounds, "calls": calls, "threads": threads,
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--int8", default="model_int8.tflite", help="the int8 file's name in MODEL_DIR")
    ap.add_argument("--json", type=Path, help="also write the result here")
    a = ap.parse_args()
    res = measure(a.model_dir, a.rounds, a.calls, a.threads, ("model_fp32.tflite", a.int8))
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")


if __name__ == "__main__":
    main()

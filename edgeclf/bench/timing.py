"""The timing loop and peak-memory probe used inside bench workers (pure Python + NumPy).

The loop adds as little as possible around the call it times: one ``perf_counter_ns`` pair per
iteration into a preallocated list, the input array prepared once outside the loop.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable

import numpy as np

from edgeclf.bench.config import TimingConfig


def time_calls(fn: Callable[[], object], warmup_iters: int, warmup_seconds: float, min_iters: int,
               min_seconds: float, max_seconds: float) -> np.ndarray:
    """Call ``fn()`` repeatedly and return the wall time of each timed call.

    Warm-up: ``fn`` runs untimed at least ``warmup_iters`` times and for at least
    ``warmup_seconds``. Then timed calls continue until both ``min_iters`` calls and
    ``min_seconds`` have passed, or ``max_seconds`` has passed (at least one call is timed).

    Returns:
        float64 (n,) milliseconds per call.
    """
    clock = time.perf_counter_ns
    start = clock()
    i = 0
    while i < warmup_iters or (clock() - start) < warmup_seconds * 1e9:
        fn()
        i += 1
    min_ns, max_ns = min_seconds * 1e9, max_seconds * 1e9
    times: list[int] = []
    append = times.append
    t_start = clock()
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        append(t1 - t0)
        elapsed = t1 - t_start
        if (len(times) >= min_iters and elapsed >= min_ns) or elapsed >= max_ns:
            break
    return np.asarray(times, dtype=np.float64) / 1e6


def latency_stats(fn: Callable[[], object], timing: TimingConfig) -> dict:
    """Batch-1 latency of ``fn``: ``{"latency_ms_p50", "latency_ms_p95", "latency_ms_mean", "iters"}``."""
    ms = time_calls(fn, timing.warmup_iters, timing.warmup_seconds, timing.min_iters, timing.min_seconds,
                    timing.max_seconds)
    return {"latency_ms_p50": float(np.percentile(ms, 50)), "latency_ms_p95": float(np.percentile(ms, 95)),
            "latency_ms_mean": float(ms.mean()), "iters": int(ms.size)}


def throughput_stats(fn: Callable[[], object], batch_size: int, timing: TimingConfig) -> dict:
    """Images per second of ``fn`` processing ``batch_size`` images per call (median call time).

    Returns ``{"throughput_ips", "batch_ms_p50", "iters"}``.
    """
    ms = time_calls(fn, max(1, min(timing.warmup_iters, 3)), min(timing.warmup_seconds, 0.5),
                    timing.throughput_min_iters, timing.throughput_min_seconds, timing.max_seconds)
    p50 = float(np.percentile(ms, 50))
    return {"throughput_ips": batch_size / (p50 / 1e3), "batch_ms_p50": p50, "iters": int(ms.size)}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``VmHWM``; ``ru_maxrss`` as fallback)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0  # bytes on macOS, kB on Linux

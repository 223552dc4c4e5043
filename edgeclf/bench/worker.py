"""One bench measurement in a fresh process: ``python -m edgeclf.bench.worker SPEC.json``.

A fresh process per artifact isolates engines from each other (no shared thread pools, caches or
allocator state) and gives an honest peak memory: the process only imports the runtime, opens
one artifact and runs it. Runtime artifacts never import TensorFlow here; only the Keras rows
and the default-converter reference do (:mod:`edgeclf.bench._keras_worker`).

SPEC.json (written by :mod:`edgeclf.bench.runner`)::

    {"kind": "runtime" | "keras-function" | "keras-gpu" | "keras-predict" | "convert-default",
     "path": artifact file (runtime) or model directory (keras kinds),
     "input": InputSpec dict, "labels": [...], "precision": str,
     "threads": int, "batch_size": int, "timing": TimingConfig fields,
     "images": uint8 (N, H, W, C) .npy, "accuracy": bool,
     "probs_out": float32 (N, C) .npy written when accuracy is true,
     "result_out": JSON written here, "out_file": .tflite written by convert-default}

Order inside a worker: load -> batch-1 latency -> API-path latency -> batch-N throughput ->
peak RSS (before the test set is read, so it is the cost of load + run only) -> accuracy.
The result JSON is rewritten at the start of each phase, so a hard crash (segfault) still tells
the parent which phase died.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from edgeclf.bench._worker_base import ACCURACY_CHUNK, PARENT_ENV, Phase, batch_of, views
from edgeclf.bench.config import TimingConfig
from edgeclf.bench.timing import latency_stats, peak_rss_mb, throughput_stats

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _open_runtime(spec: dict):
    """The artifact ``spec["path"]`` opened on its engine (:func:`edgeclf.runtime.open_engine`) and bound."""
    from edgeclf.runtime.loader import open_engine
    from edgeclf.runtime.manifest import InputSpec

    clf = open_engine(Path(spec["path"]), threads=spec["threads"])
    return clf.bind(InputSpec.from_dict(spec["input"]), list(spec["labels"]), spec["precision"])


def run_runtime(spec: dict, phase: Phase) -> None:
    """Measure one .tflite/.onnx artifact through edgeclf.runtime (no TensorFlow)."""
    timing = TimingConfig(**spec["timing"])
    images = np.load(spec["images"], mmap_mode="r")
    n_batch = int(spec["batch_size"])
    phase.enter("load")
    clf = _open_runtime(spec)
    res = phase.result
    res.update(engine=clf.engine, device="CPU", input_dtype=str(clf.input_dtype),
               fixed_batch=clf.input_tensor.fixed_batch)
    phase.enter("run")
    tta = bool(spec.get("tta"))
    clf.tta = tta
    one = batch_of(images, 1)
    fixed = clf.input_tensor.fixed_batch
    raw = clf._run  # the backend's bare engine call: set input, invoke, read output
    res["latency"] = latency_stats(_bare_calls(raw, views(clf.prepare_batch(one), tta), fixed), timing)
    # The public API path (quantize + run + dequantize/softmax) for the overhead note.
    api_timing = TimingConfig(warmup_iters=timing.warmup_iters, warmup_seconds=0.0,
                              min_iters=max(1, timing.min_iters // 2), min_seconds=timing.min_seconds / 4,
                              max_seconds=timing.max_seconds / 4)
    res["api_latency"] = latency_stats(lambda: clf.predict(one), api_timing)
    if fixed is None:
        xn = views(clf.prepare_batch(batch_of(images, n_batch)), tta)
        res["throughput"] = throughput_stats(_bare_calls(raw, xn, fixed), n_batch, timing)
        res["throughput_mode"] = f"one call of batch {len(xn)}"
    else:
        calls = -(-n_batch // fixed)
        xf = views(clf.prepare_batch(batch_of(images, calls * fixed)), tta)
        res["throughput"] = throughput_stats(_bare_calls(raw, xf, fixed), calls * fixed, timing)
        res["throughput_mode"] = f"{len(xf) // fixed} calls of the fixed batch {fixed}"
    res["peak_rss_mb"] = peak_rss_mb()
    if spec["accuracy"]:
        phase.enter("accuracy")
        t0 = time.perf_counter()
        probs = np.concatenate([clf.predict(np.asarray(images[i:i + ACCURACY_CHUNK], dtype=np.float32))
                                for i in range(0, len(images), ACCURACY_CHUNK)])
        res["accuracy_seconds"] = time.perf_counter() - t0
        np.save(spec["probs_out"], probs.astype(np.float32))


def _bare_calls(raw, x: np.ndarray, fixed: int | None):
    """A no-argument callable running the bare engine call ``raw`` over all of ``x`` (N, H, W, C): one
    call, or on a fixed-batch model one call per consecutive chunk of ``fixed`` images (N divisible by it)."""
    if fixed is None or fixed >= len(x):
        return lambda: raw(x)
    chunks = [np.ascontiguousarray(x[i:i + fixed]) for i in range(0, len(x), fixed)]

    def loop() -> None:
        for chunk in chunks:
            raw(chunk)

    return loop


def die_with_parent() -> None:
    """Linux: have the kernel send this process SIGTERM when its parent (the bench) dies, even by
    SIGKILL, so no worker outlives its bench. Elsewhere (or without libc's ``prctl``) a no-op.

    SIGTERM keeps its default action in a worker (end at once): its files all live in the bench
    work directory, which the bench removes (see :func:`edgeclf.bench.runner.run_child`).
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import os
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return
    parent = os.environ.get(PARENT_ENV)
    if parent and os.getppid() != int(parent):  # the bench died before prctl: stop now
        sys.exit(1)


def main(argv: list[str]) -> int:
    """Run the measurement SPEC.json describes; exit 0 on success, 1 on a caught failure."""
    if len(argv) != 1:
        print("usage: python -m edgeclf.bench.worker SPEC.json", file=sys.stderr)
        return 2
    die_with_parent()
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    phase = Phase(Path(spec["result_out"]))
    try:
        if spec["kind"] == "runtime":
            run_runtime(spec, phase)
        else:
            from edgeclf.bench._keras_worker import run_keras

            run_keras(spec, phase)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a status row, never a crash of the bench
        phase.fail(exc)
        return 1
    phase.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

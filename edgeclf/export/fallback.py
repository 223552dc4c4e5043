"""Accuracy-aware fallback (``--fallback``): keep the most quantization-sensitive layers in float.

When an int8 artifact misses the accuracy gate (``--max-accuracy-drop``), the layers are ranked by
the ``--quant-report`` error (lowest SNR first, :func:`edgeclf.export.quant_report.worst_layers`)
and the file is re-made with the first 1, 2, ... of them in float — TFLite selective quantization
(QuantizationDebugger ``denylisted_nodes``), onnxruntime ``nodes_to_exclude`` — and re-validated,
until the drop is within the budget or ``fallback_max_layers`` layers are float. The size and the
batch-1 latency of the all-int8 file and of the final one are recorded (:class:`FallbackCost`).

The same idea as NNCF's ``quantize_with_accuracy_control`` (rank quantized layers by their effect
on the metric, revert them to float one group at a time until the drop is within
``max_drop``; https://docs.openvino.ai/2024/openvino-workflow/model-optimization-guide/quantizing-models-post-training/quantizing-with-accuracy-control.html ,
``nncf/quantization/algorithms/accuracy_control``). Differences: NNCF ranks by each layer's
measured effect on the validation metric; edgeclf ranks by the per-layer SNR the report already
computed (one report, no extra validation pass per candidate) and adds layers one at a time.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclf.runtime.manifest import FallbackCost, Validation

log = logging.getLogger(__name__)
LATENCY_WARMUP = 5
LATENCY_RUNS = 30


@dataclass(frozen=True)
class FallbackOutcome:
    """The last attempt of :func:`search`: its float layers, its validation, whether it met the budget."""

    float_layers: tuple[str, ...]
    validation: Validation
    within_budget: bool


def search(ranked_layers: list[str], attempt: Callable[[tuple[str, ...]], Validation], max_drop_pp: float,
           max_layers: int) -> FallbackOutcome | None:
    """Keep the first k of ``ranked_layers`` in float for k = 1, 2, ... until ``attempt(layers)``
    drops at most ``max_drop_pp`` points or k reaches ``max_layers`` (or the number of layers).

    Args:
        ranked_layers: layer names, most sensitive first.
        attempt: makes the artifact with those layers in float (it stays written) and validates it.
        max_drop_pp: the accuracy budget, points.
        max_layers: at most this many layers go to float (>= 1).

    Returns:
        the last attempt, or None if there is no layer to keep in float.
    """
    outcome = None
    for k in range(1, min(max_layers, len(ranked_layers)) + 1):
        layers = tuple(ranked_layers[:k])
        v = attempt(layers)
        outcome = FallbackOutcome(layers, v, v.acc_drop_pp <= max_drop_pp)
        log.info("[export] fallback: %d float layer(s), drop %.2f points (budget %g)", k, v.acc_drop_pp, max_drop_pp)
        if outcome.within_budget:
            break
    return outcome


def p50_latency_ms(path: Path, image: np.ndarray, runs: int = LATENCY_RUNS) -> float:
    """Median batch-1 latency (ms) of ``path`` on the runtime, 1 engine thread, after a warm-up.

    ``image``: float32 (1, H, W, C) [0, 255]. A quick export-time figure on a possibly busy machine:
    compare the two files of one export, use ``edgeclf bench`` for published numbers.
    """
    from edgeclf.runtime import load_classifier

    clf = load_classifier(path, threads=1)
    try:
        for _ in range(LATENCY_WARMUP):
            clf.predict(image)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            clf.predict(image)
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        clf.close()
    return round(statistics.median(times), 4)


def cost(int8_validation: Validation, int8_size_bytes: int, int8_latency_ms: float, final_path: Path,
         image: np.ndarray, within_budget: bool) -> FallbackCost:
    """The :class:`FallbackCost` record of the file at ``final_path`` against the all-int8 figures."""
    return FallbackCost(acc_drop_pp_int8=int8_validation.acc_drop_pp, size_bytes_int8=int(int8_size_bytes),
                        latency_ms_p50_int8=int8_latency_ms, latency_ms_p50=p50_latency_ms(final_path, image),
                        within_budget=within_budget)

"""Accuracy-aware fallback (``--fallback``): keep the most quantization-sensitive layers in float.

When an int8 artifact misses the accuracy gate (``--max-accuracy-drop``), candidate layers are
ranked and the file is re-made with the first 1, 2, ... of them in float — TFLite selective
quantization (QuantizationDebugger ``denylisted_nodes``), onnxruntime ``nodes_to_exclude`` — and
re-validated, until the drop is within the budget or ``fallback_max_layers`` layers are float
(:func:`search`). Ranking (``--fallback-ranking``):

* ``snr`` (default, cheap): the ``--quant-report`` error, lowest SNR first
  (:func:`edgeclf.export.quant_report.worst_layers`); no extra file per candidate.
* ``measured``: the top ``fallback_max_layers`` SNR candidates are each tried alone in float (one
  conversion + validation each) and ordered by the drop that gives, smallest first; the cumulative
  search then adds them in that order. It exists because SNR can mislead: on the CIFAR-10
  mobilenet_v2 the second-ranked SNR layer made the TFLite file worse (docs/quantization.md).

If no attempt meets the budget, the file written is the one with the smallest drop among every
attempt *and* the all-int8 file — adding float layers can make a file worse, so the last attempt
is not necessarily the best one. The size and the batch-1 latency of the all-int8 file and of the
kept one are recorded (:class:`FallbackCost`, with which file was kept and every attempt).

The same idea as NNCF's ``quantize_with_accuracy_control`` (rank quantized layers by their effect
on the metric, revert them to float one group at a time until the drop is within
``max_drop``; https://docs.openvino.ai/2024/openvino-workflow/model-optimization-guide/quantizing-models-post-training/quantizing-with-accuracy-control.html ,
``nncf/quantization/algorithms/accuracy_control``). Differences: by default edgeclf ranks by the
per-layer SNR the report already computed (no validation pass per candidate; ``measured`` is the
NNCF-like ranking, restricted to the top SNR candidates) and adds layers one at a time.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclf.export.config import FALLBACK_RANKINGS as RANKINGS
from edgeclf.runtime.manifest import FallbackAttempt, FallbackCost, Validation

log = logging.getLogger(__name__)
LATENCY_WARMUP = 5
LATENCY_RUNS = 30


@dataclass(frozen=True)
class FallbackOutcome:
    """What :func:`search` kept: its float layers (() = the all-int8 file), its validation, whether it
    met the budget, and every attempt made (in order) under which ranking."""

    float_layers: tuple[str, ...]
    validation: Validation
    within_budget: bool
    attempts: tuple[FallbackAttempt, ...] = ()
    ranking: str = "snr"

    @property
    def kept(self) -> str:
        """``FallbackCost.kept``: ``"within-budget"`` or ``"best"`` (the smallest drop, none passed)."""
        return "within-budget" if self.within_budget else "best"


def search(ranked_layers: list[str], attempt: Callable[[tuple[str, ...]], Validation], max_drop_pp: float,
           max_layers: int, *, int8: Validation, ranking: str = "snr",
           keep: Callable[[tuple[str, ...]], None] | None = None) -> FallbackOutcome | None:
    """Keep the first k candidates in float for k = 1, 2, ... until ``attempt(layers)`` drops at most
    ``max_drop_pp`` points or k reaches ``max_layers`` (or the number of layers).

    The candidates are the first ``max_layers`` of ``ranked_layers``, in that order (``ranking``
    ``"snr"``) or ordered by the drop of one attempt with each of them alone in float, smallest first,
    ties in ``ranked_layers`` order (``"measured"``; those probes count as attempts, and the
    cumulative step k = 1 reuses its probe instead of re-making it).

    Which file is kept: the first attempt within the budget; if none is, the one with the smallest
    drop among every attempt and the all-int8 file (``int8``; ties keep the earlier, fewer-layer one).
    ``attempt`` overwrites the file, so the caller keeps a copy each time ``keep(layers)`` is called
    and writes the last copy back at the end: ``keep`` is called for ``()`` before the first attempt
    (the written file is then the all-int8 one) and right after each attempt that beats every earlier
    one, so the last ``keep`` names the kept file (``outcome.float_layers``). Copies, not re-making
    the best file at the end: the written file is then byte for byte the one validated (no reliance on
    the converter being deterministic) and it costs one file copy per improvement instead of one
    more conversion and validation pass (minutes on a mobilenet_v2).

    Args:
        ranked_layers: layer names, most sensitive first (SNR).
        attempt: makes the artifact with those layers in float (it stays written) and validates it.
        max_drop_pp: the accuracy budget, points.
        max_layers: at most this many layers go to float (>= 1); also the number of ``measured`` probes.
        int8: the validation of the all-int8 file (written when ``search`` is called).
        ranking: ``"snr"`` or ``"measured"`` (:data:`RANKINGS`).
        keep: called with the float layers of each new best file while it is written (see above).

    Returns:
        the kept file's outcome (the all-int8 one, no attempt made, if ``int8`` is already within the
        budget), or None if there is no layer to keep in float.

    Raises:
        ValueError: an unknown ``ranking``.
    """
    if ranking not in RANKINGS:
        raise ValueError(f"unknown fallback ranking {ranking!r} (one of {', '.join(RANKINGS)})")
    candidates = list(dict.fromkeys(ranked_layers))[:max(max_layers, 0)]
    if not candidates:
        return None
    keep = keep or (lambda layers: None)
    attempts: list[FallbackAttempt] = []
    made: dict[tuple[str, ...], Validation] = {}
    best: tuple[tuple[str, ...], Validation] = ((), int8)
    keep(())

    def run(layers: tuple[str, ...], probe: bool) -> Validation:
        nonlocal best
        if layers in made:
            return made[layers]
        v = made[layers] = attempt(layers)
        attempts.append(FallbackAttempt(list(layers), v.acc_drop_pp, probe))
        what = "probe" if probe else f"{len(layers)} float layer(s)"
        log.info("[export] fallback %s: %s in float, drop %.2f points (all-int8 %.2f, budget %g)", what,
                 ", ".join(layers), v.acc_drop_pp, int8.acc_drop_pp, max_drop_pp)
        if v.acc_drop_pp < best[1].acc_drop_pp:
            best = (layers, v)
            keep(layers)
        return v

    def outcome(layers: tuple[str, ...], v: Validation, within: bool) -> FallbackOutcome:
        return FallbackOutcome(layers, v, within, tuple(attempts), ranking)

    if int8.acc_drop_pp <= max_drop_pp:
        return outcome((), int8, True)
    if ranking == "measured":
        drop = {layer: run((layer,), probe=True).acc_drop_pp for layer in candidates}
        candidates.sort(key=drop.__getitem__)   # stable: SNR order breaks ties
        log.info("[export] fallback: measured ranking %s",
                 ", ".join(f"{layer} ({drop[layer]:.2f})" for layer in candidates))
    for k in range(1, len(candidates) + 1):
        layers = tuple(candidates[:k])
        v = run(layers, probe=False)
        if v.acc_drop_pp <= max_drop_pp:
            return outcome(layers, v, True)
    layers, v = best
    log.info("[export] fallback: no attempt within %g points; keeping the best, %s (drop %.2f)", max_drop_pp,
             f"{len(layers)} float layer(s)" if layers else "the all-int8 file", v.acc_drop_pp)
    return outcome(layers, v, False)


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
         image: np.ndarray, outcome: FallbackOutcome) -> FallbackCost:
    """The :class:`FallbackCost` record of the kept file at ``final_path`` (``outcome``) against the
    all-int8 figures (the all-int8 latency is reused when that is the file kept)."""
    latency = p50_latency_ms(final_path, image) if outcome.float_layers else int8_latency_ms
    return FallbackCost(acc_drop_pp_int8=int8_validation.acc_drop_pp, size_bytes_int8=int(int8_size_bytes),
                        latency_ms_p50_int8=int8_latency_ms, latency_ms_p50=latency,
                        within_budget=outcome.within_budget, kept=outcome.kept, ranking=outcome.ranking,
                        attempts=list(outcome.attempts))

"""Per-stage latency bookkeeping and the end-of-run summary of the camera loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# stage name -> what it measures (reported in this order)
STAGES = {
    "capture_wait": "main thread waiting for the next frame",
    "decode": "capture thread: read()/decode of one frame",
    "preprocess": "resize + colour + normalise/quantize (LUT), either thread",
    "inference": "engine call incl. output dequantize/softmax",
    "overlay_write": "putText overlay + VideoWriter.write",
}


class StageTimes:
    """Collects per-frame durations (seconds) of each stage; cheap enough for > 1000 FPS."""

    def __init__(self) -> None:
        self._t: dict[str, list[float]] = {name: [] for name in STAGES}
        self._skipped: dict[str, str] = {}

    def skip(self, stage: str, reason: str) -> None:
        """Mark a stage as not run (reported as skipped with ``reason``)."""
        self._skipped[stage] = reason

    def add(self, capture_wait: float, decode: float, preprocess: float, inference: float,
            overlay_write: float | None) -> None:
        """Record one frame's stage durations in seconds (``overlay_write`` None when skipped)."""
        t = self._t
        t["capture_wait"].append(capture_wait)
        t["decode"].append(decode)
        t["preprocess"].append(preprocess)
        t["inference"].append(inference)
        if overlay_write is not None:
            t["overlay_write"].append(overlay_write)

    def summary(self) -> dict[str, dict]:
        """stage -> ``{"p50_ms", "p95_ms", "mean_ms", "n"}`` or ``{"skipped": reason}``."""
        out: dict[str, dict] = {}
        for name, values in self._t.items():
            if name in self._skipped:
                out[name] = {"skipped": self._skipped[name]}
                continue
            if not values:
                out[name] = {"n": 0}
                continue
            ms = np.asarray(values, dtype=np.float64) * 1000.0
            p50, p95 = np.percentile(ms, [50, 95])
            out[name] = {"p50_ms": float(p50), "p95_ms": float(p95), "mean_ms": float(ms.mean()), "n": len(ms)}
        return out


@dataclass
class CameraStats:
    """Summary of one camera-loop run.

    Attributes:
        frames: frames classified.
        seconds: wall time from the first read to the end, s.
        stages: per-stage latency, see :meth:`StageTimes.summary` (ms).
        end_reason: why the run ended (end of file, --max-frames, source lost, ...).
        ok: False if the source was lost for good, a file stalled, or the run failed mid-way.
        reconnects: reopen attempts made.
        dropped: live frames replaced by a newer one before they could be processed.
        skipped: video-file frames that could not be decoded and were skipped.
    """

    frames: int
    seconds: float
    stages: dict[str, dict]
    end_reason: str
    ok: bool = True
    reconnects: int = 0
    dropped: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    engine: str = ""
    precision: str = ""

    @property
    def wall_fps(self) -> float:
        """End-to-end throughput: frames / wall seconds."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"frames": self.frames, "seconds": round(self.seconds, 4), "wall_fps": round(self.wall_fps, 2),
                "stages": self.stages, "end_reason": self.end_reason, "ok": self.ok,
                "reconnects": self.reconnects, "dropped": self.dropped, "skipped": self.skipped, "notes": list(self.notes),
                "engine": self.engine, "precision": self.precision}

    def format(self) -> str:
        """Multi-line text: frames, wall FPS, then p50/p95 latency per stage in ms."""
        lines = [
            f"frames: {self.frames} in {self.seconds:.2f} s -> {self.wall_fps:.1f} FPS (wall, end-to-end)"
            + (f" [{self.engine} {self.precision}]" if self.engine else ""),
            f"ended: {self.end_reason}" + ("" if self.ok else " [failed]"),
        ]
        if self.reconnects or self.dropped:
            lines.append(f"reconnect attempts: {self.reconnects}   live frames dropped (newer frame arrived): "
                         f"{self.dropped}")
        if self.skipped:
            lines.append(f"undecodable frames skipped: {self.skipped}")
        lines.append(f"{'stage':<15}{'p50 ms':>9}{'p95 ms':>9}  what")
        for name, what in STAGES.items():
            s = self.stages.get(name, {})
            if "skipped" in s:
                lines.append(f"{name:<15}{'-':>9}{'-':>9}  skipped ({s['skipped']})")
            elif s.get("n"):
                lines.append(f"{name:<15}{s['p50_ms']:>9.3f}{s['p95_ms']:>9.3f}  {what}")
            else:
                lines.append(f"{name:<15}{'-':>9}{'-':>9}  no frames")
        return "\n".join(lines)

"""Bench figures: top-1 accuracy vs batch-1 p50 latency, and file sizes (raw and gzipped).

Uses the Agg helpers of :mod:`edgeclf._mpl` (matplotlib imported lazily, PNGs written atomically).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeclf._mpl import pyplot as _plt
from edgeclf._mpl import save_png as _save
from edgeclf.bench.config import BenchRow

_COLOURS = {"tensorflow": "tab:grey", "litert": "tab:blue", "onnxruntime": "tab:orange"}


def label(row: BenchRow) -> str:
    """Short label of a row for plots, e.g. ``tflite int8``."""
    fmt = row.format.replace(" (default converter, reference)", " default-conv (ref)")
    return f"{fmt} {row.precision}" if not fmt.startswith("keras") else fmt


def _label_offsets(pts: list[BenchRow], line: float = 0.03, width: float = 0.22) -> list[float]:
    """Vertical label offsets (points) so labels of nearby points stack instead of overprinting.

    Works in axis-fraction units: x = log latency, y = accuracy, each scaled to [0, 1]; a label
    occupies ``width`` x ``line`` to the right of its point.
    """
    if not pts:
        return []
    lx = np.log10([r.latency_ms_p50 for r in pts])
    acc = np.asarray([r.top1_acc for r in pts], dtype=np.float64)
    x = (lx - lx.min()) / max(float(np.ptp(lx)), 1e-9)
    y = (acc - acc.min()) / max(float(np.ptp(acc)), 1e-9)
    taken: list[tuple[float, float]] = []
    out = []
    for xi, yi in zip(x, y):
        n = 0
        while any(abs(xi - tx) < width and abs((yi - n * line) - ty) < line for tx, ty in taken):
            n += 1
        taken.append((xi, yi - n * line))
        out.append(4.0 - 9.0 * n)
    return out


def accuracy_vs_latency(rows: list[BenchRow], path: Path, title: str) -> Path:
    """Scatter of top1_acc against latency_ms_p50 (log x), one labelled point per measured row."""
    plt = _plt()
    pts = [r for r in rows if r.top1_acc is not None and r.latency_ms_p50]
    fig, ax = plt.subplots(figsize=(8, 5))
    placed = _label_offsets(pts)
    for r, dy in zip(pts, placed):
        ax.scatter(r.latency_ms_p50, r.top1_acc, s=40, color=_COLOURS.get(r.engine, "tab:green"),
                   marker="s" if r.status.value != "ok" else "o", zorder=3)
        ax.annotate(label(r), (r.latency_ms_p50, r.top1_acc), textcoords="offset points", xytext=(6, dy),
                    fontsize=7)
    if pts:
        ax.set_xscale("log")
    for engine, colour in _COLOURS.items():
        ax.scatter([], [], color=colour, label=engine)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.margins(x=0.2, y=0.1)
    ax.set_xlabel("batch-1 latency p50 (ms, log scale)")
    ax.set_ylabel("top-1 accuracy (test)")
    ax.set_title(f"{title}: accuracy vs latency (squares: status not ok)")
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def size_bars(rows: list[BenchRow], path: Path, title: str) -> Path:
    """Horizontal bars of size_bytes and size_gzip_bytes (MB) per distinct file."""
    plt = _plt()
    seen, pts = set(), []
    for r in rows:
        if r.size_bytes is not None and r.file not in seen:
            seen.add(r.file)
            pts.append(r)
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.45 * max(len(pts), 1)))
    y = np.arange(len(pts))
    raw = [r.size_bytes / 1e6 for r in pts]
    gz = [(r.size_gzip_bytes or 0) / 1e6 for r in pts]
    ax.barh(y - 0.2, raw, height=0.4, label="file", color="tab:blue")
    ax.barh(y + 0.2, gz, height=0.4, label="gzip -9", color="tab:cyan")
    for yi, (a, b) in enumerate(zip(raw, gz)):
        ax.text(a, yi - 0.2, f" {a:.2f}", va="center", fontsize=7)
        ax.text(b, yi + 0.2, f" {b:.2f}", va="center", fontsize=7)
    ax.set_yticks(y, [f"{label(r)} ({r.file})" if not r.format.startswith("keras") else r.file for r in pts],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("size (MB, 10^6 bytes)")
    ax.set_title(f"{title}: artifact size")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)

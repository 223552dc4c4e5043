"""Render a :class:`~edgeclf.runtime.predict.PredictionReport` as a text table, JSON or CSV.

Files are written atomically (:mod:`edgeclf._io`): a failed write leaves no half-written file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from edgeclf._io import write_text
from edgeclf.errors import ConfigError
from edgeclf.runtime.predict import PredictionReport


def format_table(report: PredictionReport, max_rows: int | None = None) -> str:
    """Plain-text table: one row per file with its top-k ``label prob`` pairs.

    ``max_rows`` limits the rows shown (the rest are summarised in one line); None shows all.
    """
    rows = []
    n = len(report.files)
    shown = n if max_rows is None else min(n, max_rows)
    for i in range(shown):
        preds = "  ".join(
            f"{report.labels[j]} {p:.3f}" for j, p in zip(report.topk_idx[i], report.topk_probs[i])
        )
        rows.append((report.files[i], preds))
    k = report.topk_idx.shape[1] if report.topk_idx.ndim == 2 else 1
    head = ("file", f"top-{k} (label prob)")
    width = max([len(head[0])] + [len(r[0]) for r in rows])
    lines = [f"{head[0]:<{width}}  {head[1]}", f"{'-' * width}  {'-' * len(head[1])}"]
    lines += [f"{f:<{width}}  {p}" for f, p in rows]
    if shown < n:
        lines.append(f"... {n - shown} more rows (use --json or --csv for all)")
    return "\n".join(lines)


def format_summary(report: PredictionReport) -> str:
    """One or more lines: images, throughput, skipped count, and on labelled folders the top-1 /
    top-k accuracy and a confusion matrix (rows true, columns predicted)."""
    lines = [
        f"{len(report.files)} image(s) in {report.seconds:.2f} s ({report.images_per_s:.1f} images/s incl. "
        f"decode) on {report.engine} {report.precision}" + (" with flip TTA" if report.tta else "")
        + (f", {len(report.skipped)} skipped" if report.skipped else "")
    ]
    if report.labelled:
        k = report.topk_idx.shape[1]
        acc = f"top-1 accuracy: {report.top1_acc:.4f}"
        if k > 1:
            acc += f"   top-{k} accuracy: {report.topk_acc:.4f}"
        lines.append(acc)
        lines.append(format_confusion(report))
    return "\n".join(lines)


def format_confusion(report: PredictionReport) -> str:
    """The confusion matrix as text: rows = true class, columns = predicted top-1 class."""
    cm = report.confusion_matrix
    if cm is None:
        return ""
    names = report.labels
    cell = max(5, max(len(s) for s in names), len(str(int(cm.max()))))
    corner = "true \\ pred"
    first = max(len(corner), max(len(s) for s in names))
    lines = ["confusion matrix (rows: true, columns: predicted)",
             f"{corner:<{first}} " + " ".join(f"{s:>{cell}}" for s in names)]
    for name, row in zip(names, cm):
        lines.append(f"{name:<{first}} " + " ".join(f"{int(v):>{cell}}" for v in row))
    return "\n".join(lines)


def report_dict(report: PredictionReport) -> dict:
    """JSON-ready dict: model info, one entry per file with its top-k, accuracy and confusion matrix."""
    return {
        "model": report.model,
        "engine": report.engine,
        "precision": report.precision,
        "tta": report.tta,
        "labels": list(report.labels),
        "predictions": [
            {
                "file": f,
                "top_k": [{"label": report.labels[j], "prob": round(float(p), 6)}
                          for j, p in zip(report.topk_idx[i], report.topk_probs[i])],
                **({"true": report.labels[int(report.true_idx[i])]} if report.true_idx is not None else {}),
            }
            for i, f in enumerate(report.files)
        ],
        "skipped": [{"file": f, "reason": r} for f, r in report.skipped],
        "top1_acc": report.top1_acc,
        "confusion_matrix": None if report.confusion_matrix is None else report.confusion_matrix.tolist(),
        "seconds": round(report.seconds, 4),
    }


def report_json(report: PredictionReport) -> str:
    """The report as indented JSON text (see :func:`report_dict`)."""
    return json.dumps(report_dict(report), indent=2) + "\n"


def report_csv(report: PredictionReport) -> str:
    """CSV text: ``file, [true,] label_1, prob_1, ..., label_k, prob_k`` with a header row."""
    k = report.topk_idx.shape[1]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["file"] + (["true"] if report.labelled else [])
    for r in range(1, k + 1):
        header += [f"label_{r}", f"prob_{r}"]
    w.writerow(header)
    for i, f in enumerate(report.files):
        row = [f] + ([report.labels[int(report.true_idx[i])]] if report.labelled else [])
        for j, p in zip(report.topk_idx[i], report.topk_probs[i]):
            row += [report.labels[j], f"{float(p):.6f}"]
        w.writerow(row)
    return buf.getvalue()


def write_report(report: PredictionReport, path: str | Path, fmt: str) -> Path:
    """Write the report to ``path`` atomically as ``fmt`` (``"json"`` or ``"csv"``).

    Raises:
        ConfigError: unknown ``fmt``.
        OSError: the file cannot be written (naming ``path``, never a temporary file).
    """
    if fmt == "json":
        return write_text(path, report_json(report))
    if fmt == "csv":
        return write_text(path, report_csv(report))
    raise ConfigError(f"unknown report format '{fmt}' (expected json or csv)")

"""Bench reports: the Markdown table (+ method header), the same table as CSV, JSON, plots.

bench.md and bench.csv hold exactly the same cells (formatted once, here); ``n/a`` marks a value
that was not measured, and the row's status and detail say why.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

from edgeclf._io import write_json, write_text
from edgeclf._machine import cpu_id_label
from edgeclf.bench.config import COLUMNS, BenchConfig, BenchResult, BenchRow, Status
from edgeclf.predictions import FILE as PREDICTIONS_FILE
from edgeclf.predictions import write_predictions

NA = "n/a"
_FORMATS = {"top1_acc": "{:.4f}", "acc_drop_pp": "{:+.2f}", "top1_agreement": "{:.4f}",
            "latency_ms_p50": "{:.3f}", "latency_ms_p95": "{:.3f}", "throughput_ips": "{:.1f}",
            "speedup_vs_original": "{:.2f}", "peak_rss_mb": "{:.1f}"}


def cells(row: BenchRow) -> list[str]:
    """The row's cells as strings, in :data:`COLUMNS` order."""
    out = []
    for col, value in row.as_dict().items():
        if value is None or value == "":
            out.append(NA if col != "detail" else "")
        elif col in _FORMATS:
            out.append(_FORMATS[col].format(value))
        else:
            out.append(" ".join(str(value).split()).replace("|", "/"))
    return out


def markdown_table(rows: list[BenchRow]) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` with a header of :data:`COLUMNS`."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[BenchRow]) -> str:
    """The same table as CSV (header row, then one line per row)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow(cells(r))
    return buf.getvalue()


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """Rows of the first Markdown table in ``text`` whose header starts with ``| format |``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| format |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip()[1:-1].split("|")))))
    return rows


def _ratio(rows: list[BenchRow], engine_fmt: str, fast: str, slow: str) -> str | None:
    def p50(fmt: str, precision: str) -> float | None:
        return next((r.latency_ms_p50 for r in rows if r.format == fmt and r.precision == precision
                     and r.status is not Status.LOAD_FAILED and r.latency_ms_p50), None)

    a, b = p50(engine_fmt, fast), p50(engine_fmt, slow)
    return f"{engine_fmt} {fast} over {slow} {b / a:.2f}x (p50 {a:.3f} ms vs {b:.3f} ms)" if a and b else None


def _header(result: BenchResult, cfg: BenchConfig, name: str, source: str) -> str:
    m, t = result.machine, cfg.timing
    ident = cpu_id_label(m.get("cpu_id"))
    flags = ", ".join(f for f, present in m["simd_flags"].items() if present) or "none detected"
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    device = ", ".join(sorted({r.device for r in result.rows if r.engine == "tensorflow" and r.latency_ms_p50}))
    subset = " (stratified subset)" if cfg.test_samples else " (full test split)"
    method = (
        "Method: every row runs in a fresh `python -m edgeclf.bench.worker` process (LiteRT/onnxruntime "
        "rows never import TensorFlow). Latency = wall time of one batch-1 call of the bare engine "
        "(`set_tensor`+`invoke`+`get_tensor` / `session.run`) on a prepared input array, after "
        f"{t.warmup_iters} warm-up calls (and >= {t.warmup_seconds} s); timed calls: >= {t.min_iters} and "
        f">= {t.min_seconds} s, at most {t.max_seconds} s. throughput_ips = batch_size / median time of a "
        "batch call (fixed-batch models loop over the batch). speedup_vs_original = p50 of "
        "`keras tf.function` / p50 of the row. peak_rss_mb = peak resident memory of the worker after "
        "loading and running (before the test set is read). top1_agreement = fraction of test images "
        "with the same top-1 class as the float original; acc_drop_pp = original top-1 minus this "
        "top-1, in percentage points. The `keras model.predict` row reuses the tf.function row's "
        "accuracy (same model). Sizes: file bytes and gzip -9 bytes."
    )
    lines = [
        f"# Benchmark: {name}", "",
        f"- model directory: `{result.model_dir}`; test data: `{source}`, {result.n_test} images{subset}",
        (f"- machine: {m['cpu_model']}{f' ({ident})' if ident else ''} ({m['arch']}), {m['logical_cores']} logical cores "
         f"({m['usable_cores']} usable), {m['mem_total_mb']} MB RAM, {m['os']}, Python {m['python']}"),
        f"- SIMD flags present: {flags}", f"- versions: {versions}",
        (f"- threads: {cfg.threads} per engine (LiteRT num_threads, onnxruntime intra-op, TF intra-op; "
         f"inter-op 1); float original on: {device or 'n/a'}"),
        *([("- test-time augmentation: flip (`--tta`): top-1 from the mean of each image's and its mirror's "
             "probabilities; latency and throughput include both inferences (twice the MACs per image)")]
          if cfg.tta else []),
        (f"- load average at start / end: {m.get('load_average_start')} / {m.get('load_average_end')} "
         "(other work on the machine inflates latencies)"), "",
        method, "",
    ]
    ratios = [r for r in (_ratio(result.rows, "tflite", "int8", "fp32"), _ratio(result.rows, "onnx", "int8", "fp32"))
              if r]
    ref = next((r for r in result.rows if r.format == "tflite" and r.precision == "int8" and r.speedup_vs_original),
               None)
    if ref is not None:
        ratios.append(f"tflite int8 over keras tf.function {ref.speedup_vs_original:.2f}x")
    if ratios:
        lines += ["Batch-1 p50 speed-ups: " + "; ".join(ratios) + ".", ""]
    return "\n".join(lines) + "\n"


def _overhead_table(rows: list[BenchRow]) -> str:
    measured = [r for r in rows if r.extra.get("api_latency_ms_p50") is not None and r.latency_ms_p50]
    if not measured:
        return ""
    intro = ("Bare engine call (used for the table) vs the public `Classifier.predict` path (float "
             "[0, 255] image -> quantize -> run -> dequantize/softmax), batch-1 p50:")
    lines = ["", "## Timing-loop overhead", "", intro, "",
             "| format | precision | bare_ms_p50 | classifier_predict_ms_p50 | overhead_ms |", "|---|---|---|---|---|"]
    for r in measured:
        api = r.extra["api_latency_ms_p50"]
        lines.append(f"| {r.format} | {r.precision} | {r.latency_ms_p50:.3f} | {api:.3f} | "
                     f"{api - r.latency_ms_p50:+.3f} |")
    return "\n".join(lines) + "\n"


def write_reports(result: BenchResult, cfg: BenchConfig, name: str, source: str) -> dict[str, Path]:
    """Write bench.md, bench.csv, bench.json, machine.json, predictions.npz (per-image top-1 of every
    row with accuracy, :mod:`edgeclf.bench.predictions`) and the two plots into ``result.out_dir``.

    Returns {kind: path}. Plot failures (e.g. no matplotlib) are logged, not raised.
    """
    import logging

    out = Path(result.out_dir)
    table = markdown_table(result.rows)
    files = {
        "md": write_text(out / "bench.md", _header(result, cfg, name, source) + table + _overhead_table(result.rows)),
        "csv": write_text(out / "bench.csv", csv_text(result.rows)),
        "machine": write_json(out / "machine.json", result.machine),
        "json": write_json(out / "bench.json", {
            "model": name, "model_dir": str(result.model_dir), "data": source, "n_test": result.n_test,
            "config": _config_dict(cfg), "machine": result.machine,
            "rows": [{**r.as_dict(), "extra": r.extra} for r in result.rows]}),
    }
    if result.predictions and result.labels is not None:
        files["predictions"] = write_predictions(out / PREDICTIONS_FILE, result.labels, result.predictions)
    try:
        from edgeclf.bench.plots import accuracy_vs_latency, size_bars

        files["accuracy_vs_latency"] = accuracy_vs_latency(result.rows, out / "accuracy_vs_latency.png", name)
        files["size"] = size_bars(result.rows, out / "size.png", name)
    except ImportError as exc:
        logging.getLogger(__name__).warning("plots skipped: %s", exc)
    return files


def _config_dict(cfg: BenchConfig) -> dict:
    d = dataclasses.asdict(cfg)
    for k in ("out_dir", "work_dir"):
        d[k] = str(d[k]) if d[k] is not None else None
    d["expected"] = [list(x) for x in cfg.expected]
    return d

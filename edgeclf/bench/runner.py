"""``run_bench``: measure every artifact of a model directory against its float original.

Each measurement runs in a fresh worker process (:mod:`edgeclf.bench.worker`); this process only
loads the test split, plans the rows, starts the workers one after another and turns their
results into :class:`~edgeclf.bench.config.BenchRow` objects. It never imports TensorFlow itself
(except through the Keras CIFAR-10 loader when the test data is the built-in ``cifar10``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgeclf._io import gzip_size, write_json
from edgeclf._machine import load_average, machine_facts
from edgeclf.bench._worker_base import PARENT_ENV
from edgeclf.bench.config import BenchConfig, BenchResult, BenchRow, Status
from edgeclf.errors import DataError, one_line
from edgeclf.predictions import row_key
from edgeclf.runtime.loader import ENGINES, verify_artifact
from edgeclf.runtime.manifest import ArtifactEntry, ArtifactStatus, Format, Manifest, Precision, read_manifest

log = logging.getLogger(__name__)

KERAS_PREDICT, KERAS_FUNCTION = "keras model.predict", "keras tf.function"
GPU_ORIGINAL = "keras tf.function (GPU original)"
BASELINE_FORMAT, BASELINE_FILE = "tflite (default converter, reference)", "baseline_default.tflite"
DETAIL_CHARS = 300  # a row's detail is cut to this many characters
STOP_GRACE_S = 2.0  # a worker asked to stop (SIGTERM) is killed after this many seconds


def _detail(text: str) -> str:
    return one_line(text)[:DETAIL_CHARS]


def artifact_kind(entry: ArtifactEntry) -> tuple[str, str]:
    """(format, kind) of a manifest entry; kind is its precision, prefixed ``pruned-`` if sparse."""
    precision = entry.precision.value
    return entry.format.value, (f"pruned-{precision}" if entry.sparsity > 0.0 else precision)


def _expected_file(fmt: str, kind: str) -> str:
    stem = kind.replace("pruned-", "pruned*_") if kind.startswith("pruned-") else kind
    return f"model_{stem}.{fmt}"


def _manifest_problem(entry: ArtifactEntry, model_dir: Path) -> tuple[Status, str] | None:
    """A listed file that is gone, or the export-time validation failure the manifest records."""
    if not (model_dir / entry.file).is_file():
        return Status.FILE_MISSING, "listed in manifest.json but the file is missing"
    if entry.status is ArtifactStatus.VALIDATION_FAILED:
        v = entry.validation
        facts = f"acc_drop_pp {v.acc_drop_pp} on {v.n_images} images" if v else "no validation recorded"
        return Status.VALIDATION_FAILED, f"export-time validation failed: {facts} (measured anyway)"
    return None


def file_sizes(path: Path) -> tuple[int, int]:
    """(size_bytes, size_gzip_bytes at compresslevel 9) of a file."""
    return path.stat().st_size, gzip_size(path)


def run_child(cmd: list[str], log_file, env: dict[str, str], timeout_s: float) -> tuple[int | None, bool]:
    """Run a worker process to its end: -> (exit code or None, timed out).

    On a timeout, Ctrl-C or SIGTERM (:class:`KeyboardInterrupt` in this process) the worker is
    asked to stop (SIGTERM), given :data:`STOP_GRACE_S` to do so, then killed; the exception
    propagates. Its scratch files live in the bench work directory, so nothing outlives the bench.
    """
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        return proc.wait(timeout=timeout_s), False
    except subprocess.TimeoutExpired:
        return None, True
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _Workers:
    """Starts worker processes with a shared base spec and turns their output into rows."""

    def __init__(self, cfg: BenchConfig, manifest: Manifest, work: Path, images: Path) -> None:
        self.cfg, self.work, self.count = cfg, work, 0
        self.base = {"input": manifest.input.to_dict(), "labels": list(manifest.labels),
                     "threads": cfg.threads, "batch_size": cfg.batch_size, "tta": cfg.tta,
                     "timing": dataclasses.asdict(cfg.timing), "images": str(images)}
        env = dict(os.environ)
        pkg_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # the workers' own temporary files (TensorFlow's autograph modules, ...) go into the work
        # directory, so they are removed with it even when a worker is killed
        tmp = work / "tmp"
        tmp.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmp)
        env[PARENT_ENV] = str(os.getpid())
        self.env, self.tmp = env, tmp

    def run(self, kind: str, path: Path, precision: str, accuracy: bool, out_file: Path | None = None
            ) -> tuple[dict, np.ndarray | None]:
        """Run one worker; returns (result dict with "ok"/"phase"/"error", probs or None)."""
        self.count += 1
        tag = f"{self.count:02d}_{kind}_{path.name}".replace(" ", "_")
        spec = {**self.base, "kind": kind, "path": str(path), "precision": precision, "accuracy": accuracy,
                "probs_out": str(self.work / f"{tag}.probs.npy"), "result_out": str(self.work / f"{tag}.json"),
                "out_file": str(out_file) if out_file else None}
        spec_path = write_json(self.work / f"{tag}.spec.json", spec)
        log_path = self.work / f"{tag}.log"
        cmd = [sys.executable, "-m", "edgeclf.bench.worker", str(spec_path)]
        with open(log_path, "wb") as logf:
            rc, timed_out = run_child(cmd, logf, self.env, self.cfg.worker_timeout_s)
        result_path = Path(spec["result_out"])
        try:
            result = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            result = {"ok": False, "phase": "start"}
        if not result.get("ok"):
            if timed_out:
                result["error"] = f"timed out after {self.cfg.worker_timeout_s:.0f} s"
            elif not result.get("error"):
                lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
                result["error"] = (f"worker died (exit code {rc}) in phase '{result.get('phase')}'"
                                   + (f": {lines[-1].strip()}" if lines else ""))
            return result, None
        probs_path = Path(spec["probs_out"])
        return result, (np.load(probs_path) if accuracy and probs_path.is_file() else None)


def _fill(row: BenchRow, result: dict, probs: np.ndarray | None, y: np.ndarray) -> np.ndarray | None:
    """Copy a worker result into ``row``; returns the predicted classes (or None)."""
    row.device = result.get("device", row.device)
    if not result.get("ok"):
        early = result.get("phase") in ("start", "load")
        row.status = Status.LOAD_FAILED if early else Status.RUN_FAILED
        row.detail = _detail(result.get("error", "failed"))
        return None
    lat, thr = result.get("latency", {}), result.get("throughput", {})
    row.latency_ms_p50, row.latency_ms_p95 = lat.get("latency_ms_p50"), lat.get("latency_ms_p95")
    row.throughput_ips, row.peak_rss_mb = thr.get("throughput_ips"), result.get("peak_rss_mb")
    row.extra.update(latency_iters=lat.get("iters"), latency_ms_mean=lat.get("latency_ms_mean"),
                     throughput_iters=thr.get("iters"), throughput_mode=result.get("throughput_mode"),
                     input_dtype=result.get("input_dtype"), fixed_batch=result.get("fixed_batch"),
                     accuracy_seconds=result.get("accuracy_seconds"))
    if "api_latency" in result:
        row.extra["api_latency_ms_p50"] = result["api_latency"]["latency_ms_p50"]
    if probs is None:
        return None
    if probs.shape[0] != len(y):
        row.status, row.detail = Status.RUN_FAILED, f"got {probs.shape[0]} predictions for {len(y)} images"
        return None
    pred = np.argmax(probs, axis=1)
    row.top1_acc = float(np.mean(pred == y))
    return pred


def _plan(manifest: Manifest, cfg: BenchConfig) -> tuple[list[ArtifactEntry], list[tuple[str, str]]]:
    """Manifest entries in table order (format, sparsity, precision, file), and the expected
    (format, kind) pairs that are missing."""
    entries = sorted(manifest.artifacts, key=lambda e: (list(Format).index(e.format), e.sparsity,
                                                        list(Precision).index(e.precision), e.file))
    have = {artifact_kind(e) for e in entries}
    return entries, [fk for fk in cfg.expected if fk not in have]


def run_bench(model_dir: str | Path, cfg: BenchConfig, progress: bool = True) -> BenchResult:
    """Benchmark every artifact of ``model_dir`` (and its float original) and write the reports.

    Args:
        model_dir: an edgeclf model directory with manifest.json (and model.keras for the
            float-original rows), as written by ``edgeclf train`` + ``edgeclf export``.
        cfg: what to measure and where to write (see :class:`BenchConfig`).
        progress: show a progress bar while decoding test images.

    Returns:
        :class:`BenchResult` with one row per artifact (failures are rows, never exceptions).

    Raises:
        edgeclf.runtime.ManifestError: no or malformed manifest.json.
        edgeclf.data.DataError: the test data can't be loaded or its classes differ from the
            manifest's labels.
        edgeclf.errors.ConfigError: config.json is malformed, or neither it nor ``cfg.data`` names data.
        edgeclf.errors.ModelLoadError: an artifact's sha256 differs from manifest.json (``cfg.verify``).
    """
    from edgeclf.bench.report import write_reports
    from edgeclf.bench.testdata import data_config, load_test_split

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    if cfg.verify:  # before minutes of measuring: a changed file is refused, naming both hashes
        for entry in manifest.artifacts:
            if (model_dir / entry.file).is_file():
                verify_artifact(model_dir / entry.file, entry)
    name = manifest.name or model_dir.name
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("benchmarks") / "results" / name
    spec = manifest.input
    dcfg = data_config(model_dir, cfg.data, (spec.height, spec.width))
    x, y, classes = load_test_split(dcfg, spec.channels, cfg.test_samples, cfg.seed, progress)
    if list(classes) != list(manifest.labels):
        raise DataError(f"{dcfg.source}: test classes {classes} differ from the model's labels {manifest.labels}")
    machine = machine_facts(cfg.threads)
    temp = cfg.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="edgeclf-bench-")) if temp else Path(cfg.work_dir)
    try:  # also on Ctrl-C/SIGTERM: the worker is ended (run_child) and the scratch files removed
        work.mkdir(parents=True, exist_ok=True)
        np.save(work / "x_test.npy", np.ascontiguousarray(x))
        workers = _Workers(cfg, manifest, work, work / "x_test.npy")
        rows, predictions = _measure_all(model_dir, manifest, cfg, workers, work, y)
    finally:
        shutil.rmtree(work if temp else work / "tmp", ignore_errors=True)
    machine["load_average_end"] = load_average()
    result = BenchResult(model_dir=model_dir, rows=rows, machine=machine, out_dir=out_dir, files={},
                         n_test=len(y), labels=y, predictions=predictions)
    result.files = write_reports(result, cfg, name, dcfg.source)
    return result


def _measure_all(model_dir: Path, manifest: Manifest, cfg: BenchConfig, workers: _Workers, work: Path,
                 y: np.ndarray) -> tuple[list[BenchRow], dict[str, np.ndarray]]:
    """Measure every row; returns the rows and {row key: predicted classes (N,)} of those with accuracy."""
    rows: list[BenchRow] = []
    preds: dict[int, np.ndarray] = {}
    keras_path = model_dir / "model.keras"
    total = 3 * cfg.keras + cfg.baseline

    def measure(row: BenchRow, kind: str, path: Path, accuracy: bool) -> None:
        log.info("bench [%d]: %s %s (%s)", len(rows) + 1, row.format, row.precision, row.file)
        if path.is_file():
            row.size_bytes, row.size_gzip_bytes = file_sizes(path)
        result, probs = workers.run(kind, path if kind == "runtime" else model_dir, row.precision, accuracy)
        pred = _fill(row, result, probs, y)
        if pred is not None:
            preds[id(row)] = pred
        rows.append(row)

    entries, missing = _plan(manifest, cfg)
    log.info("bench: %d artifacts, %d expected but missing, %d reference rows, %d test images",
             len(entries), len(missing), total, len(y))
    if cfg.keras:
        for fmt, kind, acc in ((KERAS_PREDICT, "keras-predict", False), (KERAS_FUNCTION, "keras-function", True)):
            row = BenchRow(fmt, "fp32", "model.keras", "tensorflow", threads=cfg.threads, batch_size=cfg.batch_size)
            if keras_path.is_file():
                measure(row, kind, keras_path, acc)
            else:
                row.status, row.detail = Status.LOAD_FAILED, "no model.keras in the model directory"
                rows.append(row)
        gpu = BenchRow(GPU_ORIGINAL, "fp32", "model.keras", "tensorflow", threads=cfg.threads,
                       batch_size=cfg.batch_size)
        if keras_path.is_file():
            measure(gpu, "keras-gpu", keras_path, False)
            if gpu.device == "no GPU":  # never a number for a device that isn't there
                gpu.status, gpu.detail = Status.NO_GPU, "TensorFlow sees no GPU on this machine; not measured"
                gpu.latency_ms_p50 = gpu.latency_ms_p95 = gpu.throughput_ips = gpu.peak_rss_mb = None
        else:
            gpu.status, gpu.detail = Status.LOAD_FAILED, "no model.keras in the model directory"
            rows.append(gpu)
    if cfg.baseline:
        base = BenchRow(BASELINE_FORMAT, "dynamic", BASELINE_FILE, "litert", threads=cfg.threads,
                        batch_size=cfg.batch_size)
        out = work / BASELINE_FILE
        conv, _ = workers.run("convert-default", model_dir, "dynamic", False, out_file=out) if keras_path.is_file() \
            else ({"ok": False, "phase": "load", "error": "no model.keras to convert"}, None)
        if conv.get("ok"):
            measure(base, "runtime", out, True)
        else:
            base.status, base.detail = Status.EXPORT_FAILED, _detail(conv.get("error", "conversion failed"))
            rows.append(base)
    for entry in entries:
        fmt, _ = artifact_kind(entry)
        sparse = f" sparsity {entry.sparsity:.0%}" if entry.sparsity > 0 else ""
        row = BenchRow(fmt, entry.precision.value + sparse, entry.file, ENGINES[entry.format], threads=cfg.threads,
                       batch_size=cfg.batch_size)
        problem = _manifest_problem(entry, model_dir)
        if problem and problem[0] is Status.FILE_MISSING:
            row.status, row.detail = problem
            rows.append(row)
            continue
        measure(row, "runtime", model_dir / entry.file, True)
        if problem and row.status is Status.OK:
            row.status, row.detail = problem
    for fmt, kind in missing:
        rows.append(BenchRow(fmt, kind, _expected_file(fmt, kind), ENGINES[Format(fmt)], threads=cfg.threads,
                             status=Status.NOT_EXPORTED, detail="expected but not in manifest.json"))
    _compare(rows, preds, cfg)
    return rows, {row_key(r.format, r.precision, r.file): preds[id(r)] for r in rows if preds.get(id(r)) is not None}


def _compare(rows: list[BenchRow], preds: dict[int, np.ndarray], cfg: BenchConfig) -> None:
    """Fill accuracy drop, agreement and speed-up relative to the tf.function row; apply the floor."""
    ref = next((r for r in rows if r.format == KERAS_FUNCTION and r.status is Status.OK), None)
    ref_pred = preds.get(id(ref)) if ref else None
    for row in rows:
        if row.format == KERAS_PREDICT and ref is not None and row.latency_ms_p50 is not None:
            row.top1_acc = ref.top1_acc  # same model, same weights: measured once on the tf.function row
            preds[id(row)] = ref_pred
            row.extra["accuracy_from"] = KERAS_FUNCTION
        pred = preds.get(id(row))
        if ref is not None and ref.top1_acc is not None and row.top1_acc is not None:
            row.acc_drop_pp = (ref.top1_acc - row.top1_acc) * 100.0
        if ref_pred is not None and pred is not None:
            row.top1_agreement = float(np.mean(pred == ref_pred))
        if ref is not None and ref.latency_ms_p50 and row.latency_ms_p50:
            row.speedup_vs_original = ref.latency_ms_p50 / row.latency_ms_p50
        if row.status is Status.OK and row.extra.get("api_latency_ms_p50") is not None and row.latency_ms_p50:
            row.extra["api_overhead_ms_p50"] = row.extra["api_latency_ms_p50"] - row.latency_ms_p50
        if (cfg.min_accuracy is not None and row.top1_acc is not None and row.top1_acc < cfg.min_accuracy
                and row.status in (Status.OK, Status.VALIDATION_FAILED)):
            row.status = Status.BELOW_MIN_ACCURACY
            row.detail = _detail(f"top1_acc {row.top1_acc:.4f} < min accuracy {cfg.min_accuracy:.4f}"
                                   + (f"; {row.detail}" if row.detail else ""))

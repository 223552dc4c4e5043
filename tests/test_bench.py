"""``edgeclf bench``: complete table, CSV == Markdown, failures as status rows, --min-accuracy exit code.

One bench run (``--quick``) on a copy of the tiny model directory with fp32 and int8 TFLite and
ONNX files and a deliberately truncated ``.tflite`` listed in the manifest.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeclf.bench.config import COLUMNS
from edgeclf.bench.report import NA, parse_markdown_table
from edgeclf.cli import cli

BROKEN = "model_broken_int8.tflite"
METRIC_COLUMNS = ("size_bytes", "size_gzip_bytes", "top1_acc", "acc_drop_pp", "top1_agreement", "latency_ms_p50",
                  "latency_ms_p95", "throughput_ips", "speedup_vs_original", "peak_rss_mb")


def _make_artifacts(model_dir: Path) -> None:
    """fp32 + int8 .tflite/.onnx via export_model, plus a truncated .tflite listed in the manifest."""
    from edgeclf.export import ExportConfig, Precision, export_model
    from edgeclf.runtime.manifest import ArtifactEntry, Format, read_manifest, write_manifest

    # the gate as in test_export for the tiny model: on its 90 test images one image is 1.1 points, and
    # the default 1-point gate marked the int8 files 'validation failed' whenever two images flipped
    # (CI, 2026-12-02), which this table test is not about
    export_model(model_dir, ExportConfig(precisions=(Precision.FP32, Precision.INT8), allow_drop=True,
                                         calibration_samples=32, max_accuracy_drop_pp=5.0), progress=False)
    data = (model_dir / "model_fp32.tflite").read_bytes()
    (model_dir / BROKEN).write_bytes(data[: len(data) // 3])
    manifest = read_manifest(model_dir)
    manifest.upsert_artifact(ArtifactEntry(file=BROKEN, format=Format.TFLITE, precision=Precision.INT8))
    write_manifest(model_dir, manifest)


@pytest.fixture(scope="module")
def bench_dir(tiny_model_dir, tmp_path_factory) -> Path:
    model_dir = tmp_path_factory.mktemp("bench") / "tiny"
    shutil.copytree(tiny_model_dir, model_dir)
    _make_artifacts(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def bench_run(bench_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_out")
    work = tmp_path_factory.mktemp("bench_work")
    res = CliRunner().invoke(cli, ["bench", str(bench_dir), "--quick", "--out", str(out), "--work-dir", str(work),
                                   "--test-samples", "60"])
    return res, out, work


def _rows(out: Path) -> tuple[list[dict], list[dict]]:
    md = parse_markdown_table((out / "bench.md").read_text())
    with open(out / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return md, rows


def test_bench_writes_complete_table(bench_run):
    res, out, work = bench_run
    assert res.exit_code == 0, res.output
    for name in ("bench.md", "bench.csv", "bench.json", "machine.json", "accuracy_vs_latency.png", "size.png"):
        assert (out / name).is_file(), name
    assert (work / "baseline_default.tflite").is_file()
    md, _ = _rows(out)
    assert list(md[0]) == list(COLUMNS)
    by = {(r["format"], r["precision"]): r for r in md}
    for key in (("keras model.predict", "fp32"), ("keras tf.function", "fp32"), ("tflite", "fp32"),
                ("onnx", "fp32"), ("tflite (default converter, reference)", "dynamic"), "model_int8.tflite",
                "model_int8.onnx"):
        row = by[key] if isinstance(key, tuple) else next(r for r in md if r["file"] == key)
        assert row["status"] == "ok", row
        assert all(row[c] not in ("", NA) for c in COLUMNS if c != "detail"), row
        assert 0.0 <= float(row["top1_acc"]) <= 1.0
        assert float(row["latency_ms_p50"]) <= float(row["latency_ms_p95"])
        assert row["threads"] == "1"
    fn = by[("keras tf.function", "fp32")]
    assert float(fn["speedup_vs_original"]) == 1.0 and float(fn["top1_agreement"]) == 1.0
    assert float(by[("tflite", "fp32")]["top1_agreement"]) >= 0.95  # fp32 conversion keeps the decisions
    # expected-but-missing formats are explicit rows, and every row has a status
    assert by[("onnx", "pruned-int8")]["status"] == "not exported"
    assert by[("onnx", "pruned-int8")]["detail"] == "expected but not in manifest.json"
    assert all(r["status"] for r in md)
    machine = json.loads((out / "machine.json").read_text())
    assert machine["threads"] == 1 and "avx2" in machine["simd_flags"]


def test_gpu_original_row_is_measured_or_says_no_gpu(bench_run):
    from edgeclf._keras import tf

    _, out, _ = bench_run
    md, _ = _rows(out)
    row = next(r for r in md if r["format"] == "keras tf.function (GPU original)")
    if tf.config.list_physical_devices("GPU"):
        assert row["status"] == "ok" and row["device"].startswith("GPU"), row
    else:  # never a number for a device that isn't there
        assert row["status"] == "no GPU", row
        assert row["latency_ms_p50"] == NA and row["throughput_ips"] == NA, row


def test_csv_matches_markdown(bench_run):
    _, out, _ = bench_run
    md, rows = _rows(out)
    assert md == rows


def test_broken_artifact_is_a_failed_row(bench_run):
    _, out, _ = bench_run
    md, _ = _rows(out)
    row = next(r for r in md if r["file"] == BROKEN)
    assert row["status"] == "load failed"
    assert row["detail"] and row["latency_ms_p50"] == NA
    assert int(row["size_bytes"]) > 0


def test_min_accuracy_fails_rows_and_exit_code(bench_dir, tmp_path):
    res = CliRunner().invoke(cli, ["bench", str(bench_dir), "--quick", "--test-samples", "30", "--no-keras",
                                   "--no-baseline", "--min-accuracy", "1.01", "--out", str(tmp_path)])
    assert res.exit_code != 0
    assert "below --min-accuracy" in res.output
    md, _ = _rows(tmp_path)
    measured = [r for r in md if r["top1_acc"] != NA]
    assert measured and all(r["status"] == "below min accuracy" for r in measured)


def test_cli_bench_does_not_import_tensorflow():
    code = "import sys, edgeclf.cli.bench, edgeclf.bench.worker; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_worker_modules_do_not_import_each_other():
    """``python -m edgeclf.bench.worker`` must load the worker module once: the TF worker kinds do not
    import it back."""
    code = ("import sys, edgeclf.bench._keras_worker; "
            "print('edgeclf.bench.worker' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_manifest_problem_tells_a_missing_file_from_a_failed_validation(tmp_path):
    from edgeclf.bench.config import Status
    from edgeclf.bench.runner import _manifest_problem
    from edgeclf.runtime.manifest import ArtifactEntry, ArtifactStatus, Format, Precision, Validation

    gone = ArtifactEntry(file="model_int8.tflite", format=Format.TFLITE, precision=Precision.INT8)
    assert _manifest_problem(gone, tmp_path) == (Status.FILE_MISSING, "listed in manifest.json but the file is missing")
    (tmp_path / "model_int8.tflite").write_bytes(b"x")
    assert _manifest_problem(gone, tmp_path) is None
    v = Validation(top1_acc=0.5, acc_drop_pp=3.0, top1_agreement=0.9, max_abs_prob_diff=0.2, n_images=10)
    failed = ArtifactEntry(file="model_int8.tflite", format=Format.TFLITE, precision=Precision.INT8, validation=v,
                           status=ArtifactStatus.VALIDATION_FAILED)
    status, detail = _manifest_problem(failed, tmp_path)
    assert status is Status.VALIDATION_FAILED and "acc_drop_pp 3.0 on 10 images" in detail


def test_predictions_npz_reproduces_the_table(bench_run):
    """predictions.npz holds each measured row's per-image top-1: its accuracy and agreement are bench.md's."""
    import numpy as np

    from edgeclf.predictions import read_predictions, row_key

    _, out, _ = bench_run
    md, _ = _rows(out)
    labels, preds = read_predictions(out / "predictions.npz")
    assert len(labels) == 60
    measured = [r for r in md if r["top1_acc"] != NA]
    assert sorted(preds) == sorted(row_key(r["format"], r["precision"], r["file"]) for r in measured)
    ref = preds[row_key("keras tf.function", "fp32", "model.keras")]
    for r in measured:
        pred = preds[row_key(r["format"], r["precision"], r["file"])]
        assert f"{np.mean(pred == labels):.4f}" == r["top1_acc"], r
        assert f"{np.mean(pred == ref):.4f}" == r["top1_agreement"], r


def test_paired_eval_pairs_two_prediction_files(tmp_path):
    """benchmarks/paired_eval.py on two predictions.npz: McNemar counts of the chosen rows, labels checked."""
    import numpy as np

    from edgeclf.predictions import write_predictions

    labels = np.arange(40) % 10
    a = labels.copy()
    a[:6] = (a[:6] + 1) % 10  # A wrong on images 0-5
    b = labels.copy()
    b[4:8] = (b[4:8] + 1) % 10  # B wrong on 4-7: only A right on 6, 7; only B right on 0-3
    write_predictions(tmp_path / "a.npz", labels, {"keras tf.function | fp32 | model.keras": a, "x | int8 | f": b})
    write_predictions(tmp_path / "b.npz", labels, {"keras tf.function | fp32 | model.keras": b})
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "paired_eval.py"
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "a.npz"), str(tmp_path / "b.npz")],
                         capture_output=True, text=True, check=True)
    assert "test top-1 0.8500 on 40 images" in run.stdout  # A: 34 of 40
    assert "test top-1 0.9000 on 40 images" in run.stdout  # B: 36 of 40
    assert "only A right 2, only B right 4" in run.stdout and "p = 0.688" in run.stdout  # 2 * P(X <= 2 | 6, 1/2)
    # a model directory is read from the predictions.npz that edgeclf train wrote into it (its keras row)
    from edgeclf.predictions import TRAIN_ROW

    (tmp_path / "run_b").mkdir()
    write_predictions(tmp_path / "run_b" / "predictions.npz", labels, {TRAIN_ROW: b})
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "a.npz"), str(tmp_path / "run_b")],
                         capture_output=True, text=True, check=True)
    assert "run_b/predictions.npz [keras | fp32 | model.keras]: test top-1 0.9000" in run.stdout
    assert "only A right 2, only B right 4" in run.stdout
    write_predictions(tmp_path / "c.npz", labels[::-1], {"keras tf.function | fp32 | model.keras": b})
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "a.npz"), str(tmp_path / "c.npz")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "different test labels" in bad.stderr

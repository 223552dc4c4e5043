"""manifest.json: typed ArtifactEntry round trips, older manifests still load, newer ones are refused.

No models needed: these tests write manifest.json files by hand (fast).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeclf.errors import ManifestError, ModelLoadError
from edgeclf.runtime import choose_artifact, load_classifier, read_manifest
from edgeclf.runtime.manifest import (
    DEFAULT_ARTIFACTS,
    SCHEMA_VERSION,
    ArtifactEntry,
    ArtifactStatus,
    Format,
    InputSpec,
    Int8Weights,
    Manifest,
    Precision,
    QuantParams,
    Validation,
    write_manifest,
)

ROOT = Path(__file__).resolve().parents[1]

FULL = ArtifactEntry(
    file="model_pruned50_int8.onnx", format=Format.ONNX, precision=Precision.INT8, sparsity=0.5012,
    quantization_aware=True, quantizer="qat+converter+tf2onnx", sha256="ab" * 32, size_bytes=441807,
    size_gzip_bytes=280472, input_quantization=QuantParams("int8", 1.0, -128),
    output_quantization=QuantParams("int8", 0.00390625, -128),
    int8_weights=Int8Weights(int8_weight_tensors=21, int8_kernel_params=103232, int8_kernel_zero_fraction=0.5),
    validation=Validation(top1_acc=0.8087, acc_drop_pp=0.57, top1_agreement=0.9321, max_abs_prob_diff=0.31,
                          n_images=10000),
    status=ArtifactStatus.VALIDATION_FAILED, tools={"tensorflow": "2.21.0", "onnxruntime": "1.32.0"},
    created="2025-01-02T03:04:05+00:00",
)

# An entry as edgeclf wrote it before entries were typed (fp32: no "quantizer" key at all).
OLD_FP32 = {"file": "model_fp32.tflite", "format": "tflite", "precision": "fp32", "sparsity": 0.0,
            "quantization_aware": False, "sha256": "cd" * 32, "size_bytes": 1656736, "size_gzip_bytes": 1532342,
            "input_quantization": None, "output_quantization": None,
            "int8_weights": {"int8_weight_tensors": 0, "int8_kernel_params": 0, "int8_kernel_zero_fraction": 0.0},
            "validation": {"top1_acc": 0.8144, "acc_drop_pp": 0.0, "top1_agreement": 1.0, "max_abs_prob_diff": 1e-05,
                           "n_images": 10000},
            "status": "ok", "tools": {"tensorflow": "2.21.0", "tfmot": "not installed"},
            "created": "2024-12-01T10:00:00+00:00"}


def _manifest_dict(artifacts: list, **extra) -> dict:
    return {"name": "m", "model": "cnn", "dataset": "cifar10",
            "input": {"height": 32, "width": 32, "channels": 3}, "labels": ["a", "b", "c"],
            "float_top1_acc": 0.81, "artifacts": artifacts, **extra}


def _write(model_dir: Path, d: dict) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "manifest.json"
    path.write_text(json.dumps(d))
    return path


def test_artifact_entry_round_trip():
    d = FULL.to_dict()
    assert d["format"] == "onnx" and d["precision"] == "int8" and d["status"] == "validation failed"
    assert d["validation"]["n_images"] == 10000 and d["input_quantization"] == {"dtype": "int8", "scale": 1.0,
                                                                                "zero_point": -128}
    back = ArtifactEntry.from_dict(json.loads(json.dumps(d)))
    assert back == FULL and back.to_dict() == d
    minimal = ArtifactEntry("model_fp32.tflite", Format.TFLITE, Precision.FP32)
    assert ArtifactEntry.from_dict(json.loads(json.dumps(minimal.to_dict()))) == minimal


def test_manifest_round_trip_through_file(tmp_path):
    m = Manifest(name="m", input=InputSpec(32, 32), labels=["a", "b", "c"], float_top1_acc=0.81, artifacts=[FULL])
    write_manifest(tmp_path, m)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["schema_version"] == SCHEMA_VERSION and on_disk["artifacts"] == [FULL.to_dict()]
    assert read_manifest(tmp_path) == m


def test_older_manifest_with_dict_entries_loads(tmp_path):
    """No schema_version, entries as older edgeclf wrote them (some with only file/format/precision)."""
    old = _manifest_dict([OLD_FP32, {"file": "model_int8.tflite", "format": "tflite", "precision": "int8"},
                          {"file": "model_fp32.onnx", "precision": "fp32", "some_future_key": 1}])
    _write(tmp_path, old)
    m = read_manifest(tmp_path)
    assert m.schema_version == 1
    fp32, int8, onnx = m.artifacts
    assert fp32.format is Format.TFLITE and fp32.precision is Precision.FP32 and fp32.quantizer is None
    assert fp32.validation == Validation(0.8144, 0.0, 1.0, 1e-05, 10000) and fp32.status is ArtifactStatus.OK
    assert fp32.int8_weights.int8_kernel_params == 0 and fp32.tools["tfmot"] == "not installed"
    assert int8.precision is Precision.INT8 and int8.validation is None and int8.sparsity == 0.0
    assert onnx.format is Format.ONNX  # from the file suffix
    assert m.artifact("model_int8.tflite") is int8 and m.artifact("nope.tflite") is None


@pytest.mark.parametrize("entry, match", [
    ({"file": "model_int4.tflite", "format": "tflite", "precision": "int4"}, "'model_int4.tflite' is malformed"),
    ({"format": "tflite", "precision": "int8"}, "artifact entry '\\?' is malformed"),
    ({"file": "model.pt", "precision": "fp32"}, "unknown file suffix"),
    ({"file": "model_int8.tflite", "format": "tflite", "precision": "int8", "status": "great"}, "malformed"),
    ({"file": "model_int8.tflite", "format": "tflite", "precision": "int8", "validation": {"acc": 1}}, "malformed"),
])
def test_malformed_entry_names_the_file(tmp_path, entry, match):
    path = _write(tmp_path, _manifest_dict([entry], schema_version=1))
    with pytest.raises(ManifestError, match=match) as exc:
        read_manifest(tmp_path)
    assert str(exc.value).startswith(f"{path}: ") and "\n" not in str(exc.value)


def test_upsert_replaces_the_same_file():
    m = Manifest(name="m", input=InputSpec(32, 32), labels=["a"])
    first = ArtifactEntry("model_int8.tflite", Format.TFLITE, Precision.INT8, size_bytes=1)
    m.upsert_artifact(first)
    m.upsert_artifact(ArtifactEntry("model_fp32.onnx", Format.ONNX, Precision.FP32))
    m.upsert_artifact(ArtifactEntry("model_int8.tflite", Format.TFLITE, Precision.INT8, size_bytes=2))
    assert [a.file for a in m.artifacts] == ["model_fp32.onnx", "model_int8.tflite"]
    assert m.artifact("model_int8.tflite").size_bytes == 2


def test_default_artifact_choice(tmp_path):
    """int8 .tflite first, then other .tflite, then int8 .onnx, then other .onnx; only existing files."""
    entries = [ArtifactEntry(f"model_{p.value}.{f.value}", f, p) for f, p in reversed(DEFAULT_ARTIFACTS)]
    m = Manifest(name="m", input=InputSpec(32, 32), labels=["a"], artifacts=entries)
    for e in entries:
        (tmp_path / e.file).write_bytes(b"x")
    assert choose_artifact(m, tmp_path, None).name == "model_int8.tflite"
    order = []
    while any((tmp_path / e.file).exists() for e in entries):
        chosen = choose_artifact(m, tmp_path, "any")  # the best file present
        order.append(chosen.name)
        chosen.unlink()
        if order == ["model_int8.tflite"]:  # the default is gone: an error, never a silent switch
            with pytest.raises(ModelLoadError, match="default artifact is listed in manifest.json but the file "
                                                     "is missing; pass --artifact any .*model_dynamic.tflite"):
                choose_artifact(m, tmp_path, None)
    assert order[:2] == ["model_int8.tflite", "model_dynamic.tflite"]  # int8, then the last-listed .tflite
    assert order[4:] == ["model_int8.onnx", "model_fp32.onnx"]
    with pytest.raises(ModelLoadError, match="lists no existing"):
        choose_artifact(m, tmp_path, "any")


def test_default_artifact_set_is_one_constant():
    from edgeclf.bench.config import BenchConfig
    from edgeclf.export.config import ExportConfig

    assert ExportConfig().jobs() == list(DEFAULT_ARTIFACTS)
    expected = BenchConfig().expected
    assert [(f.value, p.value) for f, p in DEFAULT_ARTIFACTS] == [fk for fk in expected if "pruned" not in fk[1]]
    assert {fk for fk in expected if "pruned" in fk[1]} == {("tflite", "pruned-int8"), ("onnx", "pruned-int8")}


def test_newer_schema_version_is_refused(tmp_path):
    newer = SCHEMA_VERSION + 2
    path = _write(tmp_path / "m", _manifest_dict([OLD_FP32], schema_version=newer))
    message = (f"{path}: schema_version {newer} is newer than this edgeclf understands ({SCHEMA_VERSION}); "
               "upgrade edgeclf")
    with pytest.raises(ManifestError) as exc:
        read_manifest(tmp_path / "m")
    assert str(exc.value) == message
    with pytest.raises(ModelLoadError) as exc:
        load_classifier(tmp_path / "m")
    assert str(exc.value) == message
    _write(tmp_path / "s", _manifest_dict([], schema_version="2"))
    with pytest.raises(ManifestError, match="schema_version '2' is not an integer"):
        read_manifest(tmp_path / "s")


def test_predict_cli_reports_newer_manifest(tmp_path):
    path = _write(tmp_path / "m", _manifest_dict([OLD_FP32], schema_version=SCHEMA_VERSION + 1))
    (tmp_path / "m" / "model_fp32.tflite").write_bytes(b"TFL3 not really")
    img = tmp_path / "img.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    cmd = [sys.executable, "-c", "from edgeclf.cli import main; main()", "predict", str(tmp_path / "m"), str(img)]
    r = subprocess.run(cmd,
                       cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(path) in lines[0], r.stderr
    assert f"schema_version {SCHEMA_VERSION + 1} is newer" in lines[0]


def test_fallback_record_round_trip_and_older_record_loads():
    """The fallback record: kept / ranking / attempts round-trip; a record written before those fields
    (the last attempt was kept) loads with kept "last", ranking "snr", no attempts."""
    from edgeclf.runtime.manifest import FallbackAttempt, FallbackCost

    fb = FallbackCost(acc_drop_pp_int8=0.69, size_bytes_int8=2_500_000, latency_ms_p50_int8=1.0, latency_ms_p50=1.2,
                      within_budget=False, kept="best", ranking="measured",
                      attempts=[FallbackAttempt(["a"], 0.5, probe=True), FallbackAttempt(["a", "b"], 2.3)])
    entry = ArtifactEntry("model_int8.tflite", Format.TFLITE, Precision.INT8, float_layers=["a"], fallback=fb)
    back = ArtifactEntry.from_dict(json.loads(json.dumps(entry.to_dict())))
    assert back == entry and back.fallback.attempts[0] == FallbackAttempt(["a"], 0.5, True)
    old = {"file": "model_int8.tflite", "format": "tflite", "precision": "int8", "float_layers": ["a", "b"],
           "fallback": {"acc_drop_pp_int8": 0.69, "size_bytes_int8": 2500000, "latency_ms_p50_int8": 1.0,
                        "latency_ms_p50": 1.3, "within_budget": False}}
    fb_old = ArtifactEntry.from_dict(old).fallback
    assert (fb_old.kept, fb_old.ranking, fb_old.attempts, fb_old.latency_ms_p50) == ("last", "snr", [], 1.3)
    with pytest.raises(ManifestError, match="kept"):
        ArtifactEntry.from_dict({**old, "fallback": {**old["fallback"], "kept": "random"}})

"""``edgeclf predict`` / ``edgeclf webcam`` (edgeclf.cli.runtime): outputs, accuracy, one-line errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from _runtime_fixtures import LABELS, build_models, write_labelled_folder, write_video
from click.testing import CliRunner

from edgeclf.cli.runtime import predict_cmd, webcam_cmd

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return build_models(tmp_path_factory)


@pytest.fixture(scope="module")
def folder(models, tmp_path_factory):
    return write_labelled_folder(tmp_path_factory.mktemp("labelled"), models.images, models.labels_true)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", n_frames=60)


def _run(cmd, args):
    r = CliRunner().invoke(cmd, [str(a) for a in args])
    assert "Traceback" not in r.output
    if r.exit_code not in (0, 1, 2):
        raise AssertionError(f"exit {r.exit_code}: {r.output}") from r.exception
    return r


def test_predict_labelled_folder_reports_accuracy(models, folder):
    r = _run(predict_cmd, [models.model_dir, folder, "--top-k", "2", "--batch-size", "16"])
    assert r.exit_code == 0, r.output
    assert "top-1 accuracy:" in r.output and "confusion matrix" in r.output
    acc = float(r.output.split("top-1 accuracy:")[1].split()[0])
    assert acc >= 0.9
    assert f"{len(models.images)} image(s)" in r.output


def test_predict_json_and_csv_parse(models, folder, tmp_path):
    j, c = tmp_path / "out" / "p.json", tmp_path / "p.csv"
    r = _run(predict_cmd, [models.model_dir / "model_fp32.onnx", folder, "--json", j, "--csv", c, "--top-k", "3"])
    assert r.exit_code == 0, r.output
    data = json.loads(j.read_text())
    assert len(data["predictions"]) == len(models.images) and data["engine"] == "onnxruntime"
    assert len(data["predictions"][0]["top_k"]) == 3 and data["top1_acc"] >= 0.9
    assert sum(map(sum, data["confusion_matrix"])) == len(models.images)
    rows = list(csv.DictReader(io.StringIO(c.read_text())))
    assert len(rows) == len(models.images) and rows[0]["label_1"] in LABELS and float(rows[0]["prob_1"]) > 0
    r = _run(predict_cmd, [models.model_dir, folder, "--json", "-"])  # stdout holds only the JSON
    assert json.loads(r.stdout)["labels"] == LABELS


def test_predict_skips_corrupt_image_with_one_line_warning(models, folder, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    good = next((folder / "red").glob("*.png"))
    r = _run(predict_cmd, [models.model_dir, good, bad])
    assert r.exit_code == 0, r.output
    assert r.output.count("warning: skipped") == 1 and "broken.jpg" in r.output
    r = _run(predict_cmd, [models.model_dir, bad])  # all fail -> error
    assert r.exit_code == 1 and "none of the 1 image(s) could be decoded" in r.output


def test_predict_model_without_labels_needs_labels(models, folder):
    bare = models.bare_dir / "model_int8.tflite"  # no metadata at all; fixed 32x32 input shape
    r = _run(predict_cmd, [bare, folder])
    assert r.exit_code == 1 and "the model declares no labels" in r.output and "--labels FILE" in r.output
    r = _run(predict_cmd, [bare, folder, "--labels", models.bare_dir / "labels.txt"])  # size from the shape
    assert r.exit_code == 0, r.output
    assert "top-1 accuracy:" in r.output


@pytest.mark.parametrize("model_content,images,match", [
    (b"plain text", None, "not a TFLite model"),
    (None, "does/not/exist", "no such file or directory"),
])
def test_predict_errors_are_one_line(models, folder, tmp_path, model_content, images, match):
    model = models.model_dir
    if model_content is not None:
        model = tmp_path / "fake.tflite"
        model.write_bytes(model_content)
    r = _run(predict_cmd, [model, images or folder])
    assert r.exit_code == 1 and match in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_cli_subprocess_no_tensorflow_no_traceback(models, folder, video, tmp_path):
    """predict and webcam in a fresh interpreter: they work, never import TF, and errors print one line."""
    code = f"""
import sys
from click.testing import CliRunner
from edgeclf.cli import cli  # the whole command group, as the console script loads it
r = CliRunner().invoke(cli, ['predict', {str(models.model_dir)!r}, {str(folder)!r}])
assert r.exit_code == 0 and 'top-1 accuracy' in r.output, r.output
r = CliRunner().invoke(cli, ['webcam', {str(models.model_dir)!r}, '--source', {str(video)!r}, '--headless',
                             '--max-frames', '20', '--print-predictions'])
assert r.exit_code == 0 and 'FPS' in r.output, r.output
bad = [m for m in ('tensorflow', 'tf_keras', 'keras') if m in sys.modules]
assert not bad, bad
print('OK')
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr + r.stdout
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk")
    r = subprocess.run([sys.executable, "-m", "edgeclf.cli", "predict", str(junk), str(folder)],
                       cwd=ROOT, check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("Error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_webcam_video_file_headless_with_save_and_stats(models, video, tmp_path):
    out, stats = tmp_path / "annotated.mp4", tmp_path / "stats.json"
    r = _run(webcam_cmd, [models.model_dir, "--source", video, "--headless", "--save", out,
                          "--json-stats", stats])
    assert r.exit_code == 0, r.output
    assert "frames: 60" in r.output and "ended: end of file" in r.output
    for stage in ("capture_wait", "preprocess", "inference", "overlay_write"):
        assert stage in r.output
    import cv2

    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 60 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 640
    cap.release()
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, no temp file left
    data = json.loads(stats.read_text())
    assert data["frames"] == 60 and data["stages"]["inference"]["p50_ms"] > 0


def test_webcam_source_errors(models, tmp_path):
    r = _run(webcam_cmd, [models.model_dir, "--source", tmp_path / "nope.mp4", "--headless"])
    assert r.exit_code == 1 and "video file not found" in r.output
    r = _run(webcam_cmd, [models.model_dir, "--source", "9", "--headless", "--read-timeout", "1"])
    assert r.exit_code == 1 and "cannot open camera 9" in r.output
    r = _run(webcam_cmd, [models.model_dir, "--source", "rtsp://127.0.0.1:9/none", "--headless", "--read-timeout", "1"])
    assert r.exit_code == 1 and "cannot open stream rtsp://127.0.0.1:9/none" in r.output

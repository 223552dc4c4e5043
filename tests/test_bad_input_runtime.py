"""Bad input to ``edgeclf predict`` and ``edgeclf webcam``: model directories, manifests, artifact
integrity, model files, labels, options, images, video files and streams (see tests/_bad_input.py
for the contract every case asserts)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from _bad_input import empty, no_temp_files, one_error, run, snapshot, with_hashes
from _runtime_fixtures import build_models, write_labelled_folder, write_video


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return build_models(tmp_path_factory)


@pytest.fixture(scope="module")
def folder(models, tmp_path_factory):
    return write_labelled_folder(tmp_path_factory.mktemp("labelled"), models.images[:9], models.labels_true[:9])


@pytest.fixture()
def model(models, tmp_path) -> Path:
    """A writable copy of the runtime model directory with sha256 in its manifest."""
    return with_hashes(Path(shutil.copytree(models.model_dir, tmp_path / "model")))


def _manifest(model: Path, **changes) -> Path:
    path = model / "manifest.json"
    m = json.loads(path.read_text())
    m.update(changes)
    path.write_text(json.dumps(m))
    return path


def _predict_fails(model, folder, tmpdir, out_dir, *names, extra=()):
    """predict with --json into ``out_dir`` must fail with one Error line and write nothing."""
    before = snapshot(model) if Path(model).is_dir() else None
    one_error(["predict", model, folder, "--json", out_dir / "p.json", *extra], *names)
    assert not (out_dir / "p.json").exists()
    if before is not None:
        assert snapshot(model) == before
    no_temp_files(out_dir, Path(model).parent)
    empty(tmpdir)


# -- model directory and manifest.json ---------------------------------------------------------------
def test_model_dir_without_manifest(model, folder, tmpdir_env, tmp_path):
    (model / "manifest.json").unlink()
    _predict_fails(model, folder, tmpdir_env, tmp_path, model / "manifest.json", "no manifest.json")


@pytest.mark.parametrize("text, why", [("{not json", "not valid JSON"), ("[1, 2]", "not a JSON object"),
                                       ('{"schema_version": 99}', "newer than this edgeclf"),
                                       ('{"input": {"height": 32, "width": 32}, "labels": "abc"}', "labels must be")])
def test_malformed_manifest(model, folder, tmpdir_env, tmp_path, text, why):
    (model / "manifest.json").write_text(text)
    _predict_fails(model, folder, tmpdir_env, tmp_path, model / "manifest.json", why)


def test_manifest_entry_outside_the_model_dir_is_refused(model, folder, tmpdir_env, tmp_path):
    m = json.loads((model / "manifest.json").read_text())
    m["artifacts"][0]["file"] = "../../model_int8.tflite"
    (model / "manifest.json").write_text(json.dumps(m))
    _predict_fails(model, folder, tmpdir_env, tmp_path, "manifest.json", "not a plain file name")


def test_changed_artifact_is_refused_naming_both_hashes(model, folder, tmpdir_env, tmp_path):
    entry = next(a for a in json.loads((model / "manifest.json").read_text())["artifacts"]
                 if a["file"] == "model_int8.tflite")
    f = model / "model_int8.tflite"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last byte
    f.write_bytes(bytes(data))
    import hashlib

    actual = hashlib.sha256(bytes(data)).hexdigest()
    _predict_fails(model, folder, tmpdir_env, tmp_path, f, entry["sha256"], actual, "--no-verify")
    rc, out, exc = run(["predict", model, folder, "--no-verify"])  # the explicit opt-out runs it
    assert rc == 0 and exc is None and "top-1" in out, out


def test_missing_default_artifact_is_an_error_unless_any(model, folder, tmpdir_env, tmp_path):
    (model / "model_int8.tflite").unlink()
    _predict_fails(model, folder, tmpdir_env, tmp_path, model / "model_int8.tflite", "--artifact any")
    rc, out, exc = run(["predict", model, folder, "--artifact", "any"])
    assert rc == 0 and exc is None and "litert fp32" in out.replace("[", "").replace("]", ""), out


def test_named_artifact_missing_or_not_listed(model, folder, tmpdir_env, tmp_path):
    (model / "model_fp32.onnx").unlink()
    _predict_fails(model, folder, tmpdir_env, tmp_path, model / "model_fp32.onnx", "file is missing",
                   extra=["--artifact", "model_fp32.onnx"])
    _predict_fails(model, folder, tmpdir_env, tmp_path, "model.pt", "available:", extra=["--artifact", "model.pt"])


# -- model files -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, data, why", [
    ("garbage.tflite", b"\x00" * 3 + b"not a model" * 10, "not a TFLite model"),
    ("fake.tflite", b"\x10\x00\x00\x00TFL3" + b"\xff" * 200, "LiteRT cannot load"),
    ("garbage.onnx", b"\x08\x07" + b"\xff" * 100, "onnxruntime cannot load"),
    ("model.pt", b"PK\x03\x04", "unsupported model format"),
    ("empty.onnx", b"", "onnxruntime cannot load"),
])
def test_corrupt_or_unsupported_model_file(folder, tmpdir_env, tmp_path, name, data, why):
    f = tmp_path / name
    f.write_bytes(data)
    _predict_fails(f, folder, tmpdir_env, tmp_path, f, why)


def test_truncated_onnx(models, folder, tmpdir_env, tmp_path):
    f = tmp_path / "cut.onnx"
    data = (models.model_dir / "model_fp32.onnx").read_bytes()
    f.write_bytes(data[: len(data) // 2])
    _predict_fails(f, folder, tmpdir_env, tmp_path, f, "onnxruntime cannot load")


def test_model_without_labels_needs_labels(models, folder, tmpdir_env, tmp_path):
    f = models.bare_dir / "model_fp32.tflite"
    _predict_fails(f, folder, tmpdir_env, tmp_path, f, "--labels")


@pytest.mark.parametrize("text, why", [("", "empty"), ("red\n\nblue\n", "blank line 2"), ("\xff\xfe", "cannot read")])
def test_bad_labels_file(models, folder, tmpdir_env, tmp_path, text, why):
    labels = tmp_path / "labels.txt"
    labels.write_bytes(text.encode("latin-1"))
    _predict_fails(models.bare_dir / "model_fp32.tflite", folder, tmpdir_env, tmp_path, labels, why,
                   extra=["--labels", labels])


def test_labels_file_with_the_wrong_number_of_classes(models, folder, tmpdir_env, tmp_path):
    labels = tmp_path / "two.txt"
    labels.write_text("red\ngreen\n")
    _predict_fails(models.bare_dir / "model_fp32.tflite", folder, tmpdir_env, tmp_path, "2 labels",
                   extra=["--labels", labels])


# -- options and images ------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, names", [
    (["--input-size", "0x5"], ["--input-size"]), (["--mean", "a,b"], ["--mean"]), (["--std", "1,2,3,4"], ["--std"]),
    (["--providers", "NoSuchProvider", "--artifact", "model_fp32.onnx"], ["NoSuchProvider"]),
])
def test_bad_predict_options(model, folder, tmpdir_env, tmp_path, extra, names):
    _predict_fails(model, folder, tmpdir_env, tmp_path, *names, extra=extra)


def test_json_and_csv_both_on_stdout(model, folder, tmpdir_env):
    one_error(["predict", model, folder, "--json", "-", "--csv", "-"], "--json", "--csv", code=2)
    empty(tmpdir_env)


@pytest.mark.parametrize("image_arg, why", [("nowhere/x.jpg", "no such file or directory"),
                                            ("nowhere/*.png", "no such file"), ("*.nothing", "matches no image")])
def test_images_that_name_nothing(model, tmpdir_env, tmp_path, monkeypatch, image_arg, why):
    monkeypatch.chdir(tmp_path)
    one_error(["predict", model, image_arg], image_arg)
    empty(tmpdir_env)


def test_folder_of_only_corrupt_images(model, tmpdir_env, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG signature, then nothing usable
    (d / "b.jpg").write_bytes(b"\xff\xd8\xff" + np.random.default_rng(0).bytes(200))
    _predict_fails(model, d, tmpdir_env, tmp_path, "could be decoded")


# -- webcam: video files and streams -----------------------------------------------------------------
@pytest.fixture(scope="module")
def damaged_video(tmp_path_factory) -> Path:
    """A 30-frame mp4v clip whose bytes 20-50 % are random: ~8 frames in the middle do not decode."""
    d = tmp_path_factory.mktemp("video")
    data = bytearray(write_video(d / "clip.mp4", n_frames=30).read_bytes())
    a, b = int(len(data) * 0.2), int(len(data) * 0.5)
    data[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    (d / "damaged.mp4").write_bytes(bytes(data))
    return d / "damaged.mp4"


def test_damaged_video_skips_and_counts_frames(model, damaged_video, tmpdir_env):
    rc, out, exc = run(["webcam", model, "--source", damaged_video, "--headless"])
    assert rc == 0 and exc is None, out
    frames = int(out.split("frames: ")[1].split()[0])
    skipped = int(out.split("undecodable frames skipped: ")[1].split()[0])
    assert frames + skipped == 30 and 5 <= skipped <= 20 and "ended: end of file" in out, out
    empty(tmpdir_env)


def test_damaged_video_beyond_the_bound_is_a_read_error(model, damaged_video, tmpdir_env, tmp_path):
    one_error(["webcam", model, "--source", damaged_video, "--headless", "--max-skipped-frames", "2",
               "--save", tmp_path / "out" / "a.mp4"], damaged_video, "read error", "more than 2 undecodable")
    import cv2  # the frames classified before the error are kept as a complete, playable video

    cap = cv2.VideoCapture(str(tmp_path / "out" / "a.mp4"))
    assert cap.isOpened() and 1 <= cap.get(cv2.CAP_PROP_FRAME_COUNT) <= 10
    cap.release()
    no_temp_files(tmp_path / "out")
    empty(tmpdir_env)


@pytest.mark.parametrize("content", [None, b"this is not a video\n"])
def test_video_file_missing_or_not_a_video(model, tmpdir_env, tmp_path, content):
    f = tmp_path / "clip.mp4"
    if content is not None:
        f.write_bytes(content)
    one_error(["webcam", model, "--source", f, "--headless"], f)
    empty(tmpdir_env)


@pytest.fixture()
def silent_server():
    """A TCP server that accepts connections and never sends a byte: -> its port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield srv.getsockname()[1]
    stop.set()
    srv.close()
    for c in conns:
        c.close()


def test_stream_that_never_sends_times_out(model, tmpdir_env, silent_server):
    url = f"http://127.0.0.1:{silent_server}/video.mjpg"
    one_error(["webcam", model, "--source", url, "--headless", "--read-timeout", "1", "--reconnects", "1"],
              url, "timed out after 1 s", "1 reconnect attempt(s) tried")
    empty(tmpdir_env)


def test_stream_refused_is_unreachable(model, tmpdir_env):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/video.mjpg"
    one_error(["webcam", model, "--source", url, "--headless", "--read-timeout", "2", "--reconnects", "0"],
              url, "unreachable", "0 reconnect attempt(s) tried")
    empty(tmpdir_env)

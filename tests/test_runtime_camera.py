"""The camera loop with injected captures: end of file, mid-stream disconnects, stalls, preprocessing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from _runtime_fixtures import SIZE, build_models

from edgeclf.preprocess import bgr_to_rgb, to_model_batch
from edgeclf.runtime import load_classifier
from edgeclf.runtime.camera import CameraConfig, CameraError, frame_preprocessor, run_camera
from edgeclf.runtime.video import parse_source


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return build_models(tmp_path_factory)


@pytest.fixture(scope="module")
def clf(models):
    return load_classifier(models.model_dir)


class FakeCapture:
    """Delivers ``n`` 640x480 BGR frames, then either ends (read() -> False) or stalls in read()."""

    def __init__(self, n: int, opened: bool = True, stall: threading.Event | None = None):
        self.n, self.opened, self.stall, self.i = n, opened, stall, 0
        self.frame = np.full((480, 640, 3), (0, 0, 200), np.uint8)  # red in BGR
        self.released = False

    def isOpened(self):
        return self.opened

    def read(self):
        if self.i < self.n:
            self.i += 1
            return True, self.frame.copy()
        if self.stall is not None:
            self.stall.wait(30)  # a stalled stream: read() never returns (until the test ends)
        return False, None

    def release(self):
        self.released = True


class Factory:
    """Hands out the given captures in order, then closed ones; counts open attempts."""

    def __init__(self, caps):
        self.caps, self.calls = list(caps), 0

    def __call__(self, source):
        self.calls += 1
        return self.caps.pop(0) if self.caps else FakeCapture(0, opened=False)


def test_parse_source():
    assert parse_source("0") == (0, True) and parse_source(2) == (2, True)
    assert parse_source("rtsp://cam/stream") == ("rtsp://cam/stream", True)
    assert parse_source("clip.mp4") == ("clip.mp4", False)


@pytest.mark.parametrize("artifact", ["model_int8.tflite", "model_fp32.tflite"])
def test_frame_preprocessor_equals_shared_preprocessing(models, artifact):
    clf = load_classifier(models.model_dir / artifact)
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    want = clf.prepare_batch(to_model_batch([bgr_to_rgb(frame)], SIZE, SIZE))
    got = frame_preprocessor(clf)(frame)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_live_source_lost_mid_stream_reconnects_boundedly(clf):
    factory = Factory([FakeCapture(10), FakeCapture(0, opened=False), FakeCapture(5)])
    notes = []
    cfg = CameraConfig(source=0, headless=True, reconnects=3, backoff_s=0.01, read_timeout_s=2)
    t0 = time.monotonic()
    stats = run_camera(clf, cfg, capture_factory=factory, log=notes.append)
    assert time.monotonic() - t0 < 5
    # 10 frames, lost; attempt 1 fails, attempt 2 gives 5 frames; lost again: 3 more attempts, give up.
    # A live source keeps only the newest frame, so frames read faster than inference are dropped.
    assert stats.frames + stats.dropped == 15 and stats.frames >= 2 and not stats.ok
    assert stats.reconnects == 5 and factory.calls == 1 + 5
    assert "gave up after 3 reconnect attempt(s)" in stats.end_reason
    assert sum("reconnect attempt" in n for n in notes) == 5
    text = stats.format()
    assert f"frames: {stats.frames}" in text and "inference" in text and "p95" in text


def test_stalled_live_source_times_out_instead_of_hanging(clf):
    release = threading.Event()
    try:
        factory = Factory([FakeCapture(5, stall=release), FakeCapture(0, stall=release)])
        cfg = CameraConfig(source="rtsp://fake/stream", headless=True, reconnects=1, backoff_s=0.01,
                           read_timeout_s=0.3)
        t0 = time.monotonic()
        stats = run_camera(clf, cfg, capture_factory=factory)
        assert time.monotonic() - t0 < 5
        assert stats.frames + stats.dropped == 5 and not stats.ok and "stalled" in stats.end_reason and stats.reconnects == 1
    finally:
        release.set()


def test_stalled_video_file_ends_with_stats(clf, tmp_path):
    release = threading.Event()
    try:
        cfg = CameraConfig(source=str(tmp_path / "clip.mp4"), headless=True, read_timeout_s=0.3)
        stats = run_camera(clf, cfg, capture_factory=Factory([FakeCapture(7, stall=release)]))
        assert stats.frames == 7 and not stats.ok and "stalled" in stats.end_reason and stats.reconnects == 0
    finally:
        release.set()


def test_file_source_reads_every_frame_and_max_frames(clf, tmp_path):
    cfg = CameraConfig(source=str(tmp_path / "clip.mp4"), headless=True)
    stats = run_camera(clf, cfg, capture_factory=Factory([FakeCapture(40)]))
    assert stats.frames == 40 and stats.ok and stats.end_reason == "end of file" and stats.dropped == 0
    assert stats.stages["overlay_write"] == {"skipped": "headless, no --save"}
    seen = []
    cfg = CameraConfig(source=str(tmp_path / "clip.mp4"), headless=True, max_frames=12)
    stats = run_camera(clf, cfg, capture_factory=Factory([FakeCapture(40)]),
                       on_prediction=lambda i, label, p: seen.append((i, label)))
    assert stats.frames == 12 and stats.ok and seen[0] == (0, "red") and len(seen) == 12


def test_camera_that_never_opens_is_a_clear_error(clf):
    with pytest.raises(CameraError, match="cannot open camera 0"):
        run_camera(clf, CameraConfig(source=0, headless=True), capture_factory=Factory([]))


def test_save_to_unwritable_place_is_a_clear_error(clf, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = CameraConfig(source=str(tmp_path / "clip.mp4"), headless=True, save=blocker / "out.mp4")
    with pytest.raises(CameraError, match="cannot write video"):
        run_camera(clf, cfg, capture_factory=Factory([FakeCapture(3)]))


def test_unexpected_error_mid_run_ends_with_stats(clf, tmp_path):
    cap = FakeCapture(6)
    cap.frame = np.zeros((480, 640, 5), np.uint8)  # a frame OpenCV cannot colour-convert
    stats = run_camera(clf, CameraConfig(source=str(tmp_path / "clip.mp4"), headless=True),
                       capture_factory=Factory([cap]))
    assert not stats.ok and stats.end_reason.startswith("error: ") and "\n" not in stats.end_reason

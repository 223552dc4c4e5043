"""The camera loop: capture -> preprocess -> inference -> overlay -> display / save, with stats.

``run_camera(classifier, config) -> CameraStats``. Never hangs and never ends in a traceback:

* a camera/stream/file that cannot be opened -> :class:`CameraError` (one line);
* a live source that disconnects or stalls (no frame within ``read_timeout_s``) is reopened up to
  ``reconnects`` times in a row with exponential back-off (``backoff_s``, doubling, at most 8 s);
  the counter resets once frames flow again;
* a video file ends cleanly at its last frame; undecodable frames in it are skipped and counted
  (``CameraStats.skipped``) up to ``max_skipped_frames``, more end the run as a read error; a
  stalled file ends the run;
* a stream that opens but sends nothing, or stops sending, ends with "timed out after N s" and the
  number of reconnect attempts tried;
* Ctrl-C, ``max_frames``, or ``q``/Esc in the window end the run; an unexpected engine/OpenCV
  error mid-run ends it too (``ok`` False, the error in ``end_reason``).

Every ending returns :class:`CameraStats` (frames, wall FPS, p50/p95 latency per stage and why the
run ended; ``ok`` is False if the source was lost).

Work skipped when nobody looks: the overlay is drawn only when a window is shown or a video is
saved (headless runs report the stage as skipped). The display needs an OpenCV build with a GUI
(``opencv-python``, not ``-headless``) and, on Linux, ``DISPLAY``/``WAYLAND_DISPLAY``; otherwise
the loop runs headless automatically (``CameraStats.notes`` says so).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgeclf.errors import CameraError, ConfigError, one_line
from edgeclf.preprocess import resize_image
from edgeclf.runtime.base import Classifier
from edgeclf.runtime.camera_stats import CameraStats, StageTimes
from edgeclf.runtime.video import (
    CaptureFactory,
    FrameReader,
    Status,
    open_cv_capture,
    parse_source,
    source_fps,
)

MAX_BACKOFF_S = 8.0


@dataclass(frozen=True)
class CameraConfig:
    """What to run the camera loop on and how.

    Attributes:
        source: camera index (``0``), stream URL (``rtsp://...``) or video file path.
        headless: never open a window.
        save: write the annotated video here (mp4v; written to a temporary name, then renamed).
        max_frames: stop after this many processed frames (None = until the source ends).
        read_timeout_s: a source that delivers no frame for this long is stalled, s.
        reconnects: reopen attempts in a row for a lost live source (0 = none).
        backoff_s: delay before the first reopen, doubled per attempt (capped at 8 s), s.
        max_skipped_frames: a video file's undecodable frames skipped before it counts as unreadable.

    Raises:
        ConfigError: ``max_frames`` < 1, ``read_timeout_s`` <= 0 or ``reconnects`` < 0.
    """

    source: int | str = 0
    headless: bool = False
    save: Path | None = None
    max_frames: int | None = None
    read_timeout_s: float = 5.0
    reconnects: int = 3
    backoff_s: float = 0.5
    max_skipped_frames: int = 50

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.read_timeout_s <= 0:
            raise ConfigError(f"read timeout must be > 0 s, got {self.read_timeout_s}")
        if self.reconnects < 0:
            raise ConfigError(f"reconnects must be >= 0, got {self.reconnects}")
        if self.max_skipped_frames < 0:
            raise ConfigError(f"max skipped frames must be >= 0, got {self.max_skipped_frames}")


def display_available() -> tuple[bool, str]:
    """Whether a window can be shown: (ok, reason if not)."""
    info = cv2.getBuildInformation()
    gui = ""
    for line in info.splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip()
            break
    if gui.upper() in ("", "NONE"):
        return False, "this OpenCV build has no GUI support (opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY/WAYLAND_DISPLAY not set)"
    return True, ""


def frame_preprocessor(classifier: Classifier) -> Callable[[np.ndarray], np.ndarray]:
    """A function BGR uint8 (H, W, 3) frame -> model input (1, h, w, c) in the model's dtype.

    Same pixels as ``preprocess.bgr_to_rgb`` + ``preprocess.to_model_input`` +
    ``Classifier.prepare_batch``, computed faster: one ``preprocess.resize_image`` straight from the
    frame (the same resize rule), the colour swap on the small image (a channel permutation commutes
    with a per-channel resize), then a 256-entry look-up table for normalisation + quantization.
    """
    spec = classifier.input_spec
    h, w, c = spec.height, spec.width, spec.channels
    lut = classifier.uint8_lut()
    colour = cv2.COLOR_BGR2RGB if c == 3 else cv2.COLOR_BGR2GRAY
    shape = (1, h, w, c)

    def prep(frame: np.ndarray) -> np.ndarray:
        if frame.ndim == 2 or frame.shape[2] == 1:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        small = resize_image(frame, h, w)
        return cv2.LUT(cv2.cvtColor(small, colour), lut).reshape(shape)

    return prep


@dataclass
class _Run:
    """Mutable state of one run."""

    stages: StageTimes = field(default_factory=StageTimes)
    frames: int = 0
    reconnects_used: int = 0
    dropped: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    last_open: tuple[float, str] = (0.0, "")  # (seconds, failure detail) of the last reopen attempt


def _draw_overlay(frame: np.ndarray, label: str, prob: float, fps: float) -> None:
    text = f"{label} {prob:.2f}"
    cv2.putText(frame, text, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(frame, text, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 255, 0), 2, cv2.LINE_AA)
    fps_text = f"{fps:.1f} FPS"
    cv2.putText(frame, fps_text, (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(frame, fps_text, (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)


def run_camera(
    classifier: Classifier,
    config: CameraConfig,
    capture_factory: CaptureFactory | None = None,
    on_prediction: Callable[[int, str, float], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> CameraStats:
    """Run the live classification loop.

    Args:
        classifier: a bound classifier.
        config: source and options.
        capture_factory: ``source -> capture`` (default ``cv2.VideoCapture``); injectable for tests.
        on_prediction: called per frame with ``(frame_index, top-1 label, top-1 probability)``.
        log: called with one-line notices (reconnects, headless fallback); default: ignored.

    Returns:
        :class:`CameraStats`; ``ok`` is False when a live source was lost for good or a stalled
        file ended the run.

    Raises:
        CameraError: the source cannot be opened at all, or the output video cannot be written
            (named by ``config.save``, never the temporary file; nothing is left at ``config.save``).
    """
    from edgeclf._io import atomic_path

    factory = capture_factory or functools.partial(open_cv_capture, timeout_s=config.read_timeout_s)
    note = log or (lambda msg: None)
    src, live = parse_source(config.source)
    if not live and capture_factory is None and not Path(str(src)).is_file():
        raise CameraError(f"{src}: video file not found")
    show = not config.headless
    if show:
        show, why = display_available()
        if not show:
            note(f"running headless: {why}")
    run = _Run()
    if not show:
        run.notes.append("headless")

    if config.save is None:
        cap = _open(factory, src, live, config, run, note)
        return _loop(classifier, config, factory, cap, src, live, show, None, run, on_prediction, note)
    save = Path(config.save)
    try:
        with atomic_path(save) as tmp:  # first, so an unwritable --save fails before the camera opens
            cap = _open(factory, src, live, config, run, note)
            stats = _loop(classifier, config, factory, cap, src, live, show, tmp, run, on_prediction, note)
            if stats.frames == 0:
                raise CameraError(f"{save}: no frames to save")
            _check_video(tmp, save)
    except OSError as exc:  # already names ``save``, never the temporary file
        raise CameraError(f"{save}: cannot write video ({exc.strerror or one_line(exc)})") from exc
    return stats


def _check_video(path: Path, shown_as: Path) -> None:
    """Refuse a video OpenCV could not finish (its writer ignores write errors such as a full disk)."""
    cap = cv2.VideoCapture(str(path))
    try:
        complete = cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) > 0
    finally:
        cap.release()
    if not complete:
        raise CameraError(f"{shown_as}: cannot write video (the file came out incomplete; disk full?)")


def _try_open(factory: CaptureFactory, src: int | str) -> tuple[object | None, float, str]:
    """One open attempt: -> (opened capture or None, seconds it took, failure detail or "")."""
    t0 = time.monotonic()
    try:
        cap = factory(src)
        if cap.isOpened():
            return cap, time.monotonic() - t0, ""
        cap.release()
        detail = ""
    except Exception as exc:  # noqa: BLE001 - any backend failure means "cannot open"
        detail = f"{type(exc).__name__}: {one_line(exc)}"
    return None, time.monotonic() - t0, detail


def _open(factory: CaptureFactory, src: int | str, live: bool, config: CameraConfig, run: _Run,
          note: Callable[[str], None]) -> object:
    """Open the source; a stream URL that fails is retried like a lost one (``config.reconnects``).

    Raises:
        CameraError: it cannot be opened. For a stream: "timed out after N s" when the last attempt
            waited the whole read timeout for data (a server that accepts and never sends), else
            "unreachable or unsupported"; both say how many reconnect attempts were tried.
    """
    cap, seconds, detail = _try_open(factory, src)
    if cap is not None:
        return cap
    if isinstance(src, int):
        raise CameraError(f"cannot open camera {src} (not found, busy, or no permission{'; ' + detail if detail else ''})")
    if not live:
        raise CameraError(f"cannot open video file {src} ({detail or 'unreadable or unsupported format'})")
    cap, attempts = _reopen(factory, src, config, run, note, 0)
    if cap is not None:
        return cap
    seconds, detail = run.last_open if attempts else (seconds, detail)
    tried = f"{attempts} reconnect attempt(s) tried"
    if seconds >= 0.9 * config.read_timeout_s:
        raise CameraError(f"stream {src}: timed out after {config.read_timeout_s:g} s waiting for data ({tried})")
    raise CameraError(f"cannot open stream {src} (unreachable or unsupported{'; ' + detail if detail else ''}; {tried})")


def _reopen(factory: CaptureFactory, src: int | str, config: CameraConfig, run: _Run,
            note: Callable[[str], None], attempts_in_row: int) -> tuple[object | None, int]:
    """Try to reopen a live source; returns (capture or None, attempts made in a row so far)."""
    while attempts_in_row < config.reconnects:
        delay = min(config.backoff_s * (2 ** attempts_in_row), MAX_BACKOFF_S)
        attempts_in_row += 1
        run.reconnects_used += 1
        note(f"source lost; reconnect attempt {attempts_in_row}/{config.reconnects} in {delay:.1f} s")
        time.sleep(delay)
        cap, seconds, detail = _try_open(factory, src)
        run.last_open = (seconds, detail)
        if cap is not None:
            return cap, attempts_in_row
    return None, attempts_in_row


def _loop(classifier, config, factory, cap, src, live, show, save_tmp, run, on_prediction, note) -> CameraStats:
    prep = frame_preprocessor(classifier)
    labels = classifier.labels
    st = run.stages
    writer = None
    window = "edgeclf" if show else None
    draw = show or save_tmp is not None
    if not draw:
        st.skip("overlay_write", "headless, no --save")
    reader = FrameReader(cap, live, prep, max_skipped=config.max_skipped_frames)
    readers = [reader]
    attempts_in_row = 0
    end_reason, ok = "", True
    fps_ema = 0.0
    decode_ema = prep_ema = main_ema = 0.0  # s; decide which thread preprocesses (see video.py)
    prep_on_reader = False
    t_start = time.perf_counter()
    t_prev = t_start
    try:
        while True:
            t0 = time.perf_counter()
            status, item = reader.get(config.read_timeout_s)
            t1 = time.perf_counter()
            if status != Status.FRAME:
                reason = {Status.END: "end of stream" if live else "end of file",
                          Status.TIMEOUT: f"timed out after {config.read_timeout_s:g} s without a frame (stalled)",
                          Status.ERROR: f"{'capture' if live else 'read'} error ({reader.error})"}[status]
                reader.stop(0.2)
                if not live:
                    end_reason, ok = reason, status == Status.END
                    break
                note(reason)
                cap, attempts_in_row = _reopen(factory, src, config, run, note, attempts_in_row)
                if cap is None:
                    end_reason, ok = f"{reason}; gave up after {attempts_in_row} reconnect attempt(s)", False
                    break
                reader = FrameReader(cap, live, prep, max_skipped=config.max_skipped_frames)
                reader.preprocess_here = prep_on_reader
                readers.append(reader)
                continue
            attempts_in_row = 0
            if item.model_input is not None:
                x, t_pre, prep_s = item.model_input, t1, item.preprocess_s
            else:
                x = prep(item.frame)
                t_pre = time.perf_counter()
                prep_s = t_pre - t1
            probs = classifier.predict_prepared(x)[0]
            t2 = time.perf_counter()
            top = int(np.argmax(probs))
            idx = run.frames
            run.frames += 1
            now = t2
            inst = 1.0 / max(now - t_prev, 1e-9)
            fps_ema = inst if idx == 0 else 0.9 * fps_ema + 0.1 * inst
            t_prev = now
            if on_prediction is not None:
                on_prediction(idx, labels[top], float(probs[top]))
            t3 = time.perf_counter()
            if draw:
                frame = item.frame
                _draw_overlay(frame, labels[top], float(probs[top]), fps_ema)
                if save_tmp is not None:
                    if writer is None:
                        writer = _open_writer(save_tmp, frame, source_fps(cap), Path(config.save))
                    writer.write(frame)
            t4 = time.perf_counter()
            st.add(t1 - t0, item.decode_s, prep_s, t2 - t_pre, (t4 - t3) if draw else None)
            # balance: preprocess on whichever thread makes the slower of the two faster
            decode_ema = 0.95 * decode_ema + 0.05 * item.decode_s
            prep_ema = 0.95 * prep_ema + 0.05 * prep_s
            main_ema = 0.95 * main_ema + 0.05 * (time.perf_counter() - t_pre)
            prep_on_reader = max(decode_ema + prep_ema, main_ema) < max(decode_ema, main_ema + prep_ema)
            reader.preprocess_here = prep_on_reader
            if window is not None:
                cv2.imshow(window, item.frame)
                key = cv2.waitKey(1) & 0xFF
                if key in (ord("q"), 27) or cv2.getWindowProperty(window, cv2.WND_PROP_VISIBLE) < 1:
                    end_reason = "quit by user"
                    break
            if config.max_frames is not None and run.frames >= config.max_frames:
                end_reason = f"--max-frames {config.max_frames} reached"
                break
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM through edgeclf.cli's handler
        end_reason = f"interrupted ({exc})" if str(exc) else "interrupted (Ctrl-C)"
    except CameraError:
        raise
    except Exception as exc:  # noqa: BLE001 - an engine/OpenCV failure mid-run: end with stats, not a traceback
        lines = str(exc).strip().splitlines()
        end_reason, ok = f"error: {type(exc).__name__}: {lines[0] if lines else ''}", False
    finally:
        reader.stop(0.2)
        run.dropped = sum(r.frames_dropped for r in readers)
        run.skipped = sum(r.frames_skipped for r in readers)
        if run.skipped and end_reason == "end of file":
            end_reason += f" ({run.skipped} undecodable frame(s) skipped)"
        if writer is not None:
            writer.release()
        if window is not None:
            cv2.destroyAllWindows()
    seconds = time.perf_counter() - t_start
    return CameraStats(frames=run.frames, seconds=seconds, stages=st.summary(), end_reason=end_reason, ok=ok,
                       reconnects=run.reconnects_used, dropped=run.dropped, skipped=run.skipped, notes=run.notes,
                       engine=classifier.engine, precision=classifier.precision)


def _open_writer(path: Path, frame: np.ndarray, fps: float, shown_as: Path):
    """An mp4v writer into ``path`` (a temporary file); errors name ``shown_as`` (the user's --save)."""
    h, w = frame.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise CameraError(f"{shown_as}: cannot open a video writer (mp4v) for {w}x{h} at {fps:g} FPS")
    return writer

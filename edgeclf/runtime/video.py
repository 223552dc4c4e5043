"""Frame capture on a background thread, for cameras, network streams and video files.

Two policies, chosen by the kind of source:

* **live** (camera index, ``rtsp://``/``http(s)://``/... URL): the reader keeps only the *newest*
  frame. Inference slower than the camera never builds up latency; frames that arrive while the
  model is busy are dropped (and counted).
* **file** (a video file): *every* frame is delivered in order through a short bounded queue, so a
  run is reproducible and the processing FPS of the whole pipeline is measurable (a file "plays"
  as fast as it can be processed).

In both cases decoding frame *n+1* on the reader thread overlaps preprocessing + inference of
frame *n* on the caller's thread (OpenCV and the engines release the GIL). The reader can also
run the preprocessing (``FrameReader.preprocess_here``); the camera loop switches it on when the
caller's thread is the busier one (big model: inference >> decode) and off otherwise (tiny model:
decode >> inference), so the work is balanced across two cores. A reader blocked inside
``read()`` (a stalled stream) cannot be interrupted; the consumer notices with a timeout and the
thread is abandoned (it is a daemon thread).

A video file damaged in the middle makes ``read()`` fail for the undecodable frames and succeed
again after them; only a failure once every frame the container declares
(``CAP_PROP_FRAME_COUNT``) has been read or skipped is the end of the file. The file reader skips
and counts undecodable frames up to a bound (``max_skipped``) and reports more than that as a read
error (``Status.ERROR``), so a damaged file is neither cut short silently nor read forever.

The capture object is created by an injectable factory (``source -> object with isOpened(),
read() -> (ok, frame), release()``; ``cv2.VideoCapture`` by default) so tests can simulate
sources that fail mid-stream.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class CaptureLike(Protocol):
    """What the camera loop needs from a capture (``cv2.VideoCapture`` satisfies it)."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def release(self) -> None: ...


CaptureFactory = Callable[[Any], CaptureLike]


def parse_source(source: str | int) -> tuple[int | str, bool]:
    """Interpret a ``--source`` value: -> (value to open, is_live).

    ``"0"``/``0`` -> camera index 0 (live); a URL -> live stream; anything else is a video file.
    """
    if isinstance(source, int):
        return source, True
    text = str(source).strip()
    if text.isdigit():
        return int(text), True
    if text.lower().startswith(LIVE_SCHEMES) or text.startswith("/dev/video"):
        return text, True
    return text, False


def open_cv_capture(source: int | str, timeout_s: float | None = None) -> CaptureLike:
    """The default capture factory: ``cv2.VideoCapture(source)``.

    For stream URLs, ``timeout_s`` bounds FFmpeg's open and read calls
    (``CAP_PROP_OPEN_TIMEOUT_MSEC``/``CAP_PROP_READ_TIMEOUT_MSEC``) so an unreachable or stalled
    server cannot block for FFmpeg's default (~30 s); builds without these properties fall back
    to a plain open (the camera loop's own read timeout still applies).
    """
    import cv2

    if timeout_s and isinstance(source, str) and source.lower().startswith(LIVE_SCHEMES):
        ms = int(timeout_s * 1000)
        try:
            return cv2.VideoCapture(source, cv2.CAP_FFMPEG,
                                    [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        except (cv2.error, AttributeError, TypeError):
            pass
    return cv2.VideoCapture(source)


def frame_count(cap: Any) -> int:
    """Frames the container declares (``CAP_PROP_FRAME_COUNT``), 0 if unknown (streams, fakes)."""
    try:
        import cv2

        n = float(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    except Exception:  # noqa: BLE001 - fakes without get(), backends that do not know
        return 0
    return int(n) if n == n and 0 < n < 2**31 else 0


def source_fps(cap: Any, default: float = 30.0) -> float:
    """The capture's declared frame rate (``CAP_PROP_FPS``), or ``default`` if unknown."""
    try:
        import cv2

        fps = float(cap.get(cv2.CAP_PROP_FPS))
    except Exception:  # noqa: BLE001 - fakes without get(), backends that do not know
        return default
    return fps if 1.0 <= fps <= 1000.0 else default


@dataclass
class Item:
    """One captured frame: BGR uint8 (H, W, 3) ``frame``, the ``model_input`` made from it by the
    reader (None if the reader did not preprocess it), and the reader-thread times in seconds:
    ``decode_s`` (``read()``) and ``preprocess_s`` (0 if not preprocessed)."""

    frame: np.ndarray
    model_input: Any
    decode_s: float
    preprocess_s: float


class Status:
    FRAME = "frame"
    END = "end"          # end of file, or a live source reported no frame (disconnect)
    TIMEOUT = "timeout"  # no frame within the read timeout (stalled)
    ERROR = "error"      # the reader raised (message in FrameReader.error)


class FrameReader:
    """Reads frames from an opened capture on a daemon thread.

    Args:
        cap: an opened capture.
        live: newest-frame-only policy (True) or every-frame-in-order (False); see module doc.
        preprocess: called on the reader thread with each BGR frame while ``preprocess_here`` is
            True (settable at any time); its result is ``Item.model_input``.
        queue_size: frames buffered ahead for file sources.
        max_skipped: file sources: undecodable frames skipped (and counted in ``frames_skipped``)
            before the file counts as unreadable (``Status.ERROR``, reason in ``error``).
    """

    def __init__(self, cap: CaptureLike, live: bool, preprocess: Callable[[np.ndarray], Any] | None = None,
                 queue_size: int = 4, max_skipped: int = 50) -> None:
        self._cap, self._live, self._prep = cap, live, preprocess
        self._max_skipped = max(0, int(max_skipped))
        self.frame_count = 0 if live else frame_count(cap)
        self.frames_skipped = 0
        self.preprocess_here = False
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._cond = threading.Condition()
        self._latest: Item | None = None
        self._ended = False
        self.error: str | None = None
        self.frames_read = 0
        self.frames_dropped = 0
        self._thread = threading.Thread(target=self._run, name="edgeclf-capture", daemon=True)
        self._thread.start()

    # -- reader thread -------------------------------------------------------------------------
    def _failed_read(self, fails: int) -> bool:
        """File source, ``fails`` reads in a row failed so far (this one included): True = stop
        (end of file, or ``error`` set: too many undecodable frames); False = try the next frame."""
        n = self.frame_count
        if n and self.frames_read + self.frames_skipped + fails - 1 >= n:
            self.frames_skipped += fails - 1  # declared frames that never decoded
            return True  # every declared frame read or skipped: end of file
        if self.frames_skipped + fails <= self._max_skipped:
            return False
        if n:  # frames are left but they do not decode
            self.frames_skipped += fails
            self.error = (f"more than {self._max_skipped} undecodable frames (after frame {self.frames_read} "
                          f"of {n}); the file is damaged or truncated")
        return True  # length unknown: the failures after the last frame are its end

    def _run(self) -> None:
        fails = 0
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                ok, frame = self._cap.read()
                t1 = time.perf_counter()
                if self._stop.is_set():
                    break
                if not ok or frame is None:
                    if self._live:
                        break
                    fails += 1
                    if self._failed_read(fails):
                        break
                    continue
                self.frames_skipped += fails
                fails = 0
                x = self._prep(frame) if (self.preprocess_here and self._prep is not None) else None
                item = Item(frame, x, t1 - t0, time.perf_counter() - t1 if x is not None else 0.0)
                self.frames_read += 1
                if self._live:
                    with self._cond:
                        if self._latest is not None:
                            self.frames_dropped += 1
                        self._latest = item
                        self._cond.notify()
                else:
                    while not self._stop.is_set():
                        try:
                            self._queue.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
        except Exception as exc:  # noqa: BLE001 - a broken backend or preprocessing: report, never die silently
            self.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        finally:
            self._finish()

    def _finish(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()
        if not self._live:
            while True:  # make room for the end marker if the consumer is gone
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    if self._stop.is_set():
                        break
        try:
            self._cap.release()
        except Exception:  # noqa: BLE001, S110 - releasing a broken capture
            pass

    # -- consumer side -------------------------------------------------------------------------
    def get(self, timeout_s: float) -> tuple[str, Item | None]:
        """Next frame: ``(Status.FRAME, item)``, or ``(Status.END | TIMEOUT | ERROR, None)``."""
        if self._live:
            deadline = time.monotonic() + timeout_s
            with self._cond:
                while self._latest is None and not self._ended:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return Status.TIMEOUT, None
                    self._cond.wait(left)
                item, self._latest = self._latest, None
            if item is not None:
                return Status.FRAME, item
        else:
            try:
                item = self._queue.get(timeout=timeout_s)
            except queue.Empty:
                return Status.TIMEOUT, None
            if item is not None:
                return Status.FRAME, item
        return (Status.ERROR if self.error else Status.END), None

    def stop(self, join_timeout_s: float = 1.0) -> None:
        """Ask the thread to stop; wait at most ``join_timeout_s`` (a reader stuck in ``read()``
        is abandoned: it is a daemon thread and releases the capture when ``read()`` returns)."""
        self._stop.set()
        if not self._live:
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
        self._thread.join(join_timeout_s)


def is_video_file(source: int | str) -> bool:
    """True if ``source`` names an existing file."""
    return isinstance(source, str) and Path(source).is_file()

"""The model behind ``edgeclf serve``: one classifier per process, locked, plus upload decoding.

No web framework here (``app.py`` is the HTTP layer): :class:`ModelService` opens the model once
through :func:`edgeclf.runtime.load_classifier` and runs it under a lock (an engine keeps per-call
state, so it is never used by two threads at once); decoding runs outside the lock, in parallel.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from edgeclf.errors import EdgeclfError
from edgeclf.preprocess import to_model_batch
from edgeclf.runtime.base import top_k_indices

#: Default largest accepted request body: 10 MiB (a phone photo is 2-6 MB).
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: Largest image accepted, in pixels (40 MP: more than any phone camera). A small compressed file can
#: decode to gigabytes ("decompression bomb"); OpenCV checks the header against
#: ``OPENCV_IO_MAX_IMAGE_PIXELS`` before decoding, which :func:`limit_image_pixels` sets.
MAX_IMAGE_PIXELS = 40_000_000


def limit_image_pixels(max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Make OpenCV refuse images above ``max_pixels`` (unless ``OPENCV_IO_MAX_IMAGE_PIXELS`` is set).

    OpenCV reads the variable once, at the first decode of the process: call this before any image
    is decoded (``edgeclf serve`` does, at start-up; worker processes inherit it).
    """
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(int(max_pixels)))


class UploadError(EdgeclfError, ValueError):
    """An upload the server refuses; ``status`` is the HTTP status (4xx), ``code`` a short machine word."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass(frozen=True)
class ServeConfig:
    """What ``edgeclf serve`` runs, validated once (serialisable, so each uvicorn worker process rebuilds it).

    Attributes:
        model: a ``.tflite``/``.onnx`` file or a model directory with ``manifest.json``.
        artifact, labels_file, input_size, mean, std, providers: as for ``edgeclf predict``
            (:func:`edgeclf.runtime.load_classifier`).
        threads: inference-engine CPU threads per worker process.
        max_upload_bytes: largest request body accepted (413 above it).
        max_top_k: largest ``top_k`` a request may ask for (capped to the number of classes anyway).
        verify: check the artifact's sha256 against manifest.json before opening it (``--no-verify`` off).
        tta: flip test-time augmentation (``--tta``): each upload and its mirror, probabilities averaged.
    """

    model: str
    artifact: str | None = None
    labels_file: str | None = None
    input_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    providers: tuple[str, ...] | None = None
    threads: int = 1
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_top_k: int = 100
    verify: bool = True
    tta: bool = False

    def __post_init__(self) -> None:
        from edgeclf.errors import ConfigError

        if self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
        if self.max_upload_bytes < 1024:
            raise ConfigError(f"--max-upload-mb is too small ({self.max_upload_bytes} bytes; at least 1 KiB)")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        d = json.loads(text)
        for key in ("input_size", "mean", "std", "providers"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


def decode_image(data: bytes) -> np.ndarray:
    """Uploaded bytes -> uint8 (H, W, 3) RGB, as :func:`edgeclf.preprocess.load_image` decodes files.

    Raises:
        UploadError: 400 for an empty, corrupt, truncated or unsupported image; 413 for one with more
            pixels than OpenCV's limit (:func:`limit_image_pixels`).
    """
    if not data:
        raise UploadError(400, "empty", "the upload is empty")
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # OpenCV asserts on images above OPENCV_IO_MAX_IMAGE_PIXELS
        raise UploadError(413, "image_too_large", "the image has too many pixels "
                          f"(limit {os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS', 'OpenCV default')})") from None
    if img is None:
        raise UploadError(400, "not_an_image", "not a decodable image (corrupt, truncated or unsupported format)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class ModelService:
    """One opened model, safe to call from many threads.

    Args:
        cfg: the model and options.

    Raises:
        ModelLoadError: the model cannot be opened (one line naming the file).
    """

    def __init__(self, cfg: ServeConfig) -> None:
        from edgeclf._io import sha256_file
        from edgeclf.runtime import load_classifier

        self.config = cfg
        self._clf = load_classifier(cfg.model, labels_file=cfg.labels_file, input_size=cfg.input_size,
                                    mean=cfg.mean, std=cfg.std, threads=cfg.threads,
                                    providers=list(cfg.providers) if cfg.providers else None, artifact=cfg.artifact,
                                    verify=cfg.verify, tta=cfg.tta)
        self._lock = threading.Lock()
        path = Path(self._clf.path)
        s = self._clf.input_spec
        self.info = {
            "name": (self._clf.embedded or {}).get("name") or path.stem,
            "file": path.name,
            "engine": self._clf.engine,
            "precision": self._clf.precision,
            "tta": self._clf.tta,
            "sha256": sha256_file(path),
            "size_bytes": path.stat().st_size,
            "labels": self._clf.labels,
            "num_classes": self._clf.num_classes,
            "input": {"height": s.height, "width": s.width, "channels": s.channels, "color_order": s.color_order,
                      "dtype": str(self._clf.input_dtype), "mean": list(s.mean), "std": list(s.std)},
            "max_upload_bytes": cfg.max_upload_bytes,
            "max_top_k": cfg.max_top_k,
        }

    def classify(self, data: bytes, top_k: int) -> dict:
        """Decode one uploaded image and classify it.

        Args:
            data: the image file's bytes (JPEG, PNG, BMP, WebP, ...).
            top_k: classes to return, 1..``max_top_k`` (capped to the number of classes).

        Returns:
            ``{"top_k": [{"label", "index", "prob"}, ...], "image": {"width", "height"},
            "timing_ms": {"decode", "inference"}}``, most probable first; ``decode`` includes the
            resize to the model's input, ``inference`` the wait for the engine lock.

        Raises:
            UploadError: a bad image (see :func:`decode_image`) or ``top_k`` out of range (422).
        """
        if not 1 <= top_k <= self.config.max_top_k:
            raise UploadError(422, "bad_top_k", f"top_k must be between 1 and {self.config.max_top_k}, got {top_k}")
        t0 = time.perf_counter()
        image = decode_image(data)
        s = self._clf.input_spec
        x = to_model_batch([image], s.height, s.width, s.channels)  # outside the lock: threads overlap here
        t1 = time.perf_counter()
        with self._lock:
            probs = self._clf.predict(x)
        t2 = time.perf_counter()
        idx, p = top_k_indices(probs, min(top_k, self._clf.num_classes))
        labels = self._clf.labels
        return {
            "top_k": [{"label": labels[int(i)], "index": int(i), "prob": round(float(q), 6)}
                      for i, q in zip(idx[0], p[0])],
            "image": {"width": int(image.shape[1]), "height": int(image.shape[0])},
            "timing_ms": {"decode": round((t1 - t0) * 1e3, 3), "inference": round((t2 - t1) * 1e3, 3)},
        }

    def close(self) -> None:
        """Release the engine."""
        with self._lock:
            self._clf.close()

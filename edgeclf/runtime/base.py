"""The :class:`Classifier` base: everything engine-independent about running an image classifier.

A backend (``litert.py``, ``ort.py``) only says how to feed one array to its engine and what the
model's input/output tensors look like (:class:`TensorInfo`); this class does the rest, identically
for every engine:

* normalisation ``(x - mean) / std`` from the :class:`~edgeclf.runtime.manifest.InputSpec`
  (edgeclf models have mean 0, std 1 and normalise inside themselves, so this is a no-op for them);
* int8/uint8 input quantization ``q = round(x / scale) + zero_point`` and output dequantization
  ``(q - zero_point) * scale`` with the parameters the model itself declares (for edgeclf's uint8
  files, scale 1 and zero point 0: the pixels as they are, as MediaPipe Tasks feeds them);
* fixed batch-1 models are fed one image at a time, dynamic-batch models whole batches;
* logits are turned into probabilities with a softmax (a model whose rows already sum to ~1 and
  have no negative entries is taken to output probabilities);
* optional flip test-time augmentation (:attr:`Classifier.tta`): each image and its horizontal
  mirror are run and their probabilities averaged.

No TensorFlow anywhere in this package: it runs on a Raspberry Pi.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclf.errors import ModelLoadError  # noqa: F401  (re-exported)
from edgeclf.runtime.manifest import InputSpec
from edgeclf.runtime.tflite_model_metadata import StandardMetadata

QUANTIZED_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8))


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output as the engine declares it.

    ``shape`` has ``-1`` (or None) for dynamic dimensions; ``scale``/``zero_point`` are the affine
    quantization parameters of an int8/uint8 tensor (``real = (q - zero_point) * scale``), or
    ``None`` for float tensors.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.dtype in QUANTIZED_DTYPES

    @property
    def fixed_batch(self) -> int | None:
        """The batch dimension if the model fixes it (often 1), or None when it is dynamic."""
        b = self.shape[0] if self.shape else None
        return int(b) if isinstance(b, (int, np.integer)) and b > 0 else None


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax: float (N, C) logits -> float32 (N, C) probabilities (numerically stable)."""
    z = x.astype(np.float32) - x.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def looks_like_probs(out: np.ndarray, tol: float) -> bool:
    """True if float (N, C) ``out`` has no negative entry and every row sums to 1 within ``tol``."""
    if out.size == 0:
        return True
    return bool(out.min() >= -tol and np.all(np.abs(out.sum(axis=1) - 1.0) <= tol))


class Classifier(abc.ABC):
    """An image classifier on some inference engine.

    Construction is two-step: a backend's ``__init__`` loads the engine and fills ``self._in`` /
    ``self._out`` (:class:`TensorInfo`) and ``self.embedded`` (the metadata dict found inside the
    file, or None); :func:`edgeclf.runtime.load_classifier` then calls :meth:`bind` with the
    resolved input spec and labels. Users call :meth:`predict` or :meth:`classify`.

    Properties: :attr:`input_spec`, :attr:`labels`, :attr:`engine` (``"litert"``/``"onnxruntime"``),
    :attr:`precision` (``"int8"``, ``"fp32"``, ... as the metadata says, else inferred from the I/O
    dtypes or ``"unknown"``), :attr:`path`.

    :attr:`tta` (default False): flip test-time augmentation. Every prediction then averages the
    class probabilities of each image and of its horizontal mirror (two inferences per image, so
    twice the latency and compute), as airbench's ``tta_level=1`` (Jordan 2024); Ultralytics'
    ``augment=True`` is the same idea for detection. It suits classes that look the same mirrored
    (CIFAR-10's, most photos); not text, digits or left/right classes. Measured on CIFAR-10: README
    "Measured results"; details: docs/results.md, "Flip test-time augmentation".

    Not thread-safe: one classifier per thread (engines keep per-call state).
    """

    engine: str = ""
    tta: bool = False

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._spec: InputSpec | None = None
        self._labels: list[str] = []
        self._precision: str | None = None
        self._in: TensorInfo
        self._out: TensorInfo
        self._lut: np.ndarray | None = None
        self.embedded: dict | None = None
        self.standard: StandardMetadata | None = None  # standard TFLite Model Metadata (LiteRT only)

    def bind(self, spec: InputSpec, labels: list[str], precision: str | None = None) -> Classifier:
        """Attach the input spec and labels; check them against the model's tensors.

        Raises:
            ModelLoadError: sizes, channel count, class count or mean/std disagree with the model,
                or a quantized tensor lacks scale/zero_point.
        """
        self._spec, self._labels, self._precision, self._lut = spec, list(labels), precision, None
        self._check_io()
        return self

    # -- what subclasses provide ---------------------------------------------------------------
    @abc.abstractmethod
    def _run(self, x: np.ndarray) -> np.ndarray:
        """Run the engine on ``x`` (already in the model's input dtype, shape (n, H, W, C) with n
        allowed by :attr:`TensorInfo.fixed_batch`) and return the raw first output, (n, C)."""

    def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release engine resources (optional; garbage collection does it too)."""

    # -- validation shared by backends ---------------------------------------------------------
    def _check_io(self) -> None:
        """Check the spec and labels against the model's tensors; raise ModelLoadError if they disagree."""
        s, shape = self._spec, self._in.shape
        if len(shape) != 4:
            raise ModelLoadError(f"{self._path}: expected one NHWC image input, model input has shape {shape}")
        if s.layout.upper() != "NHWC":
            raise ModelLoadError(f"{self._path}: input layout {s.layout} is not supported (the runtime feeds NHWC)")
        if shape[1] in (1, 3) and shape[3] not in (1, 3, -1):
            raise ModelLoadError(
                f"{self._path}: model input {tuple(shape)} looks NCHW; the edgeclf runtime feeds NHWC images"
            )
        dims = {"height": (shape[1], s.height), "width": (shape[2], s.width), "channels": (shape[3], s.channels)}
        for what, (model_dim, spec_dim) in dims.items():
            if isinstance(model_dim, (int, np.integer)) and model_dim > 0 and model_dim != spec_dim:
                raise ModelLoadError(
                    f"{self._path}: input {what} is {model_dim} in the model but {spec_dim} in the input spec"
                )
        for name, values in (("mean", s.mean), ("std", s.std)):
            if len(values) not in (1, s.channels):
                raise ModelLoadError(f"{self._path}: {name} needs 1 or {s.channels} values, got {len(values)}")
        if any(v == 0 for v in s.std):
            raise ModelLoadError(f"{self._path}: std must not contain 0")
        n_out = self._out.shape[-1] if self._out.shape else None
        if isinstance(n_out, (int, np.integer)) and n_out > 0 and n_out != len(self._labels):
            raise ModelLoadError(
                f"{self._path}: model outputs {n_out} classes but {len(self._labels)} labels were given"
            )
        for t in (self._in, self._out):
            if t.quantized and (t.scale is None or t.zero_point is None):
                raise ModelLoadError(
                    f"{self._path}: {t.dtype} tensor '{t.name}' has no quantization parameters "
                    "(scale/zero_point); cannot feed or read it without guessing"
                )

    # -- properties ----------------------------------------------------------------------------
    @property
    def input_spec(self) -> InputSpec:
        if self._spec is None:
            raise RuntimeError("classifier not bound to an input spec; use edgeclf.runtime.load_classifier")
        return self._spec

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    @property
    def num_classes(self) -> int:
        return len(self._labels)

    @property
    def precision(self) -> str:
        if self._precision:
            return self._precision
        if self._in.quantized or self._out.quantized:
            return str(self._in.dtype if self._in.quantized else self._out.dtype)
        return "unknown"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def input_tensor(self) -> TensorInfo:
        """The model's input as the engine declares it (shape with -1 for dynamic dims, dtype, quantization)."""
        return self._in

    @property
    def output_tensor(self) -> TensorInfo:
        """The model's output as the engine declares it."""
        return self._out

    @property
    def input_dtype(self) -> np.dtype:
        """dtype the engine is fed (float32, int8 or uint8)."""
        return self._in.dtype

    def __repr__(self) -> str:
        s = self._spec
        return (
            f"{type(self).__name__}({self._path.name}, engine={self.engine}, precision={self.precision}, "
            f"input={s.height}x{s.width}x{s.channels}, classes={self.num_classes})"
        )

    # -- input conversion ----------------------------------------------------------------------
    def _identity_normalization(self) -> bool:
        s = self._spec
        return all(m == 0.0 for m in s.mean) and all(v == 1.0 for v in s.std)

    def _normalize(self, images: np.ndarray) -> np.ndarray:
        s = self._spec
        if self._identity_normalization():
            return images
        mean = np.asarray(s.mean, dtype=np.float32)
        std = np.asarray(s.std, dtype=np.float32)
        return (images - mean) / std

    def _to_model_dtype(self, x: np.ndarray) -> np.ndarray:
        t = self._in
        if not t.quantized:
            return x.astype(t.dtype, copy=False)
        info = np.iinfo(t.dtype)
        q = np.rint(x / np.float32(t.scale)) + np.float32(t.zero_point)
        return np.clip(q, info.min, info.max).astype(t.dtype)

    def prepare_batch(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, H, W, C) in [0, 255] -> (N, H, W, C) in the model's input dtype, normalised
        and quantized. Raises ValueError if the shape is not the model's input shape."""
        images = np.asarray(images)
        s = self._spec
        if images.ndim != 4 or images.shape[1:] != (s.height, s.width, s.channels):
            raise ValueError(
                f"expected images of shape (N, {s.height}, {s.width}, {s.channels}), got {images.shape}"
            )
        return self._to_model_dtype(self._normalize(images.astype(np.float32, copy=False)))

    def uint8_lut(self) -> np.ndarray:
        """A look-up table mapping a uint8 pixel straight to the model's input value.

        Returns (256, 1, C) array in the model input dtype, usable with ``cv2.LUT`` on a uint8
        (H, W, C) image: the same numbers :meth:`prepare_batch` produces for float pixels 0..255,
        without any per-frame float arithmetic (the camera loop's fast path).
        """
        if self._lut is None:
            c = self._spec.channels
            pixels = np.repeat(np.arange(256, dtype=np.float32).reshape(256, 1, 1, 1), c, axis=3)
            lut = self._to_model_dtype(self._normalize(pixels))  # (256, 1, 1, C)
            self._lut = np.ascontiguousarray(lut.reshape(256, 1, c))
        return self._lut

    # -- output conversion ---------------------------------------------------------------------
    def _to_probs(self, raw: np.ndarray) -> np.ndarray:
        t = self._out
        out = raw.reshape(raw.shape[0], -1)
        tol = 1e-3
        if t.quantized:
            out = (out.astype(np.float32) - np.float32(t.zero_point)) * np.float32(t.scale)
            tol = max(tol, out.shape[1] * float(t.scale))  # rounding error of a quantized softmax
        else:
            out = out.astype(np.float32, copy=False)
        if looks_like_probs(out, tol):
            return np.ascontiguousarray(out, dtype=np.float32)
        return softmax(out)

    # -- public API ----------------------------------------------------------------------------
    def predict_prepared(self, x: np.ndarray) -> np.ndarray:
        """Like :meth:`predict` for input already in the model's dtype (from :meth:`prepare_batch`
        or :meth:`uint8_lut`): (N, H, W, C) -> probs float32 (N, C).

        With :attr:`tta`, the N images and their horizontal mirrors go through the engine together
        (one batch of 2N on a dynamic-batch model) and each row is the mean of the two views' probabilities.
        """
        if not self.tta:
            return self._predict_views(x)
        return mean_of_views(self._predict_views(flip_views(x)))

    def _predict_views(self, x: np.ndarray) -> np.ndarray:
        """(N, H, W, C) in the model's dtype -> float32 (N, C) probabilities, one view per image."""
        n = x.shape[0]
        fixed = self._in.fixed_batch
        if fixed is None or fixed == n:
            return self._to_probs(self._run(x))
        outs = []
        for start in range(0, n, fixed):
            chunk = x[start:start + fixed]
            m = chunk.shape[0]
            if m < fixed:  # pad the last chunk up to the fixed batch size
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - m, axis=0)])
            outs.append(self._run(chunk)[:m])
        return self._to_probs(np.concatenate(outs))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch.

        Args:
            images: float32 (N, H, W, C) RGB (or grey) in [0, 255], as made by
                ``preprocess.to_model_batch`` at this model's input size.

        Returns:
            float32 (N, num_classes), each row sums to 1.

        Raises:
            ValueError: ``images`` has the wrong shape.
        """
        if len(images) == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        return self.predict_prepared(self.prepare_batch(images))

    def classify(self, images: list[np.ndarray], top_k: int = 1) -> list[list[tuple[str, float]]]:
        """Top-k classes for each image.

        Args:
            images: uint8 RGB images (H, W, 3), any size (each is resized to the input size).
            top_k: how many classes per image (clipped to the number of classes).

        Returns:
            one list per image of ``(label, probability)`` pairs, most probable first.
        """
        from edgeclf.preprocess import to_model_batch

        if not images:
            return []
        s = self._spec
        probs = self.predict(to_model_batch(list(images), s.height, s.width, s.channels))
        idx, p = top_k_indices(probs, top_k)
        return [[(self._labels[j], float(pp)) for j, pp in zip(row_i, row_p)] for row_i, row_p in zip(idx, p)]


def flip_views(x: np.ndarray) -> np.ndarray:
    """The two views of flip test-time augmentation: NHWC ``x`` (N, H, W, C) followed by its horizontal
    mirrors (width axis reversed), (2N, H, W, C), contiguous, same dtype."""
    return np.concatenate([x, np.ascontiguousarray(x[:, :, ::-1])])


def mean_of_views(probs: np.ndarray) -> np.ndarray:
    """float (2N, C) probabilities of :func:`flip_views` input -> float32 (N, C), each image's mean of its two views."""
    n = probs.shape[0] // 2
    return ((probs[:n] + probs[n:]) * np.float32(0.5)).astype(np.float32, copy=False)


def top_k_indices(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (N, C) probs -> (int64 (N, k) class indices, float32 (N, k) probs), best first.

    Ties are broken by the lower class index. Raises ValueError if ``k < 1``.
    """
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    k = min(k, probs.shape[1])
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(probs, idx, axis=1)

"""LiteRT (``ai_edge_litert``, formerly TFLite) backend for ``.tflite`` models."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgeclf._stderr import filtered_native_stderr, info_hidden
from edgeclf.errors import one_line
from edgeclf.runtime.base import Classifier, ModelLoadError, TensorInfo
from edgeclf.runtime.manifest import METADATA_KEY, ManifestError, parse_embedded
from edgeclf.runtime.tflite_metadata import read_metadata
from edgeclf.runtime.tflite_model_metadata import StandardMetadata, read_standard_metadata

log = logging.getLogger(__name__)
_XNNPACK_NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate"


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("running .tflite models needs LiteRT: pip install ai-edge-litert") from exc
    return Interpreter


def _tensor_info(detail: dict) -> TensorInfo:
    dtype = np.dtype(detail["dtype"])
    sig = detail.get("shape_signature")
    shape = tuple(int(d) for d in (sig if sig is not None and len(sig) else detail["shape"]))
    scale, zp = detail.get("quantization", (0.0, 0))
    if dtype in (np.dtype(np.int8), np.dtype(np.uint8)) and scale:
        return TensorInfo(detail["name"], shape, dtype, float(scale), int(zp))
    return TensorInfo(detail["name"], shape, dtype)


def read_tflite_metadata(path: Path, data: bytes) -> dict | None:
    """The ``"edgeclf"`` JSON embedded in a ``.tflite`` file's bytes, parsed; None if absent.

    Raises:
        ModelLoadError: the entry exists but is not valid JSON.
    """
    try:
        raw = read_metadata(data, METADATA_KEY)
    except ValueError:
        return None  # the interpreter has accepted the file; a strange table is just "no metadata"
    if raw is None:
        return None
    try:
        return parse_embedded(raw, str(path))
    except ManifestError as exc:
        raise ModelLoadError(str(exc)) from None


def read_tflite_standard_metadata(path: Path, data: bytes) -> StandardMetadata | None:
    """The standard TFLite Model Metadata of a ``.tflite`` file's bytes; None if absent.

    Unreadable standard metadata is logged as a warning and treated as absent: the loader then
    asks for what it would have declared (it never guesses labels).
    """
    try:
        return read_standard_metadata(data)
    except ValueError as exc:
        log.warning("%s: ignoring its standard TFLite metadata: %s", path, exc)
        return None


class LiteRTClassifier(Classifier):
    """A ``.tflite`` model on the LiteRT interpreter (XNNPACK on CPU).

    ``embedded`` is the ``"edgeclf"`` JSON inside the file (or None), ``standard`` its standard
    TFLite Model Metadata (:class:`~edgeclf.runtime.tflite_model_metadata.StandardMetadata`, or None).

    Args:
        path: the ``.tflite`` file.
        threads: interpreter threads (``num_threads``); None = LiteRT's default.

    Raises:
        ModelLoadError: missing, unreadable or not a TFLite model; not one image input / one output.
    """

    engine = "litert"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__(Path(path))
        path = self._path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"{path}: cannot read model file ({exc.strerror or exc})") from None
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ModelLoadError(f"{path}: not a TFLite model (no 'TFL3' flatbuffer identifier)")
        Interpreter = _interpreter_class()
        hide = info_hidden()
        try:  # LiteRT prints its XNNPACK notice itself, ignoring TF_CPP_MIN_LOG_LEVEL
            with filtered_native_stderr(lambda line: hide and line.startswith(_XNNPACK_NOTICE)):
                self._interp = Interpreter(model_content=data, num_threads=threads)
                self._interp.allocate_tensors()
        except Exception as exc:  # noqa: BLE001 - LiteRT raises ValueError/RuntimeError with multi-line text
            raise ModelLoadError(f"{path}: LiteRT cannot load the model ({one_line(exc)})") from None
        self._model_bytes = data  # the interpreter reads from this buffer: keep it alive
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelLoadError(
                f"{path}: expected 1 input and 1 output, model has {len(ins)} inputs and {len(outs)} outputs"
            )
        self._in_index, self._out_index = ins[0]["index"], outs[0]["index"]
        self._in, self._out = _tensor_info(ins[0]), _tensor_info(outs[0])
        self._batch = int(ins[0]["shape"][0])
        self.embedded = read_tflite_metadata(path, data)
        self.standard = read_tflite_standard_metadata(path, data)

    def _run(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n != self._batch:
            self._interp.resize_tensor_input(self._in_index, list(x.shape), strict=False)
            self._interp.allocate_tensors()
            self._batch = n
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()
        return self._interp.get_tensor(self._out_index)

    def close(self) -> None:
        self._interp = None

"""onnxruntime backend for ``.onnx`` models.

int8 files and the CPU: an int8 ``.onnx`` records the CPU it was validated on (embedded metadata
``validated_on``, see :mod:`edgeclf.runtime.cpu`). Opening one on a CPU whose int8 kernel class
differs logs one warning per file and process. On x86 CPUs whose uint8 x int8 kernels saturate
(AVX2 / AVX-512 without VNNI) every session gets ``session.x64quantprecision = 1``: onnxruntime
then rewrites int8 weight tensors with values outside [-64, 64] to uint8 and runs its exact U8U8
kernels (same products, slower; 7-bit ``reduce_range`` weights are left alone); a file onnxruntime
cannot open with that option (``from-tflite`` files of older edgeclf versions, whose weights share
constants) is opened without it, with one warning.
``EDGECLF_ORT_X64_PRECISION=0`` (or ``1``) overrides that choice, for measuring both.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from edgeclf.errors import one_line
from edgeclf.runtime.base import Classifier, ModelLoadError, TensorInfo
from edgeclf.runtime.cpu import CpuFeatures, cpu_features
from edgeclf.runtime.manifest import METADATA_KEY, ManifestError, parse_embedded

log = logging.getLogger(__name__)
X64_PRECISION_KEY = "session.x64quantprecision"   # kOrtSessionOptionsAvx2PrecisionMode
X64_PRECISION_ENV = "EDGECLF_ORT_X64_PRECISION"
_warned: set[str] = set()   # files already warned about in this process

_ONNX_DTYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int8)": np.dtype(np.int8),
}


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("running .onnx models needs onnxruntime: pip install onnxruntime") from exc
    return onnxruntime


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers, e.g. ``["CPUExecutionProvider"]``."""
    return list(_ort().get_available_providers())


def _is_int8(meta: dict | None) -> bool:
    return bool(meta) and meta.get("precision") == "int8"


def x64_precision_mode(here: CpuFeatures) -> bool:
    """Whether onnxruntime sessions set ``session.x64quantprecision`` on the CPU ``here``.

    On where the U8S8 kernels saturate (:attr:`Int8KernelClass.saturates_u8s8`), off otherwise;
    ``EDGECLF_ORT_X64_PRECISION`` = ``0``/``1`` forces it. Float models have no int8 weights, so
    the option changes nothing for them.
    """
    forced = os.environ.get(X64_PRECISION_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    return here.kernel_class.saturates_u8s8


def check_validated_cpu(path: Path, meta: dict | None, here: CpuFeatures, x64_precision: bool = False) -> str | None:
    """The warning for an int8 model validated on another int8 kernel class than ``here``'s, else None.

    Logged once per ``path`` per process. Models without a ``validated_on`` record (older exports,
    third-party files) and float models are not checked.
    """
    if not _is_int8(meta) or not isinstance(meta.get("validated_on"), dict):
        return None
    try:
        validated = CpuFeatures.from_dict(meta["validated_on"])
    except (TypeError, ValueError):
        return None
    if validated.kernel_class is here.kernel_class:
        return None
    msg = (f"{path}: int8 model validated on a {validated.kernel_class.value} CPU ({validated.arch}), running on "
           f"{here.kernel_class.value} ({here.arch}): onnxruntime uses other int8 kernels here, so its accuracy "
           f"may differ from the manifest's; re-validate on this CPU (edgeclf bench)")
    if x64_precision:
        msg += f"; {X64_PRECISION_KEY}=1 is set (exact U8U8 kernels, slower)"
    key = str(Path(path).resolve())
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", msg)
    return msg


def _tensor_info(path: Path, arg, quant: dict | None) -> TensorInfo:
    dtype = _ONNX_DTYPES.get(arg.type)
    if dtype is None:
        raise ModelLoadError(f"{path}: unsupported tensor type {arg.type} for '{arg.name}'")
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in arg.shape)
    if dtype in (np.dtype(np.int8), np.dtype(np.uint8)):
        if quant is not None:
            try:
                scale, zero_point = float(quant["scale"]), int(quant["zero_point"])
            except (KeyError, TypeError, ValueError, OverflowError):
                raise ModelLoadError(f"{path}: embedded '{METADATA_KEY}' metadata has malformed quantization "
                                     f"parameters for '{arg.name}' (need scale and zero_point)") from None
            if not (math.isfinite(scale) and scale > 0):
                raise ModelLoadError(f"{path}: embedded '{METADATA_KEY}' metadata has scale {scale} for '{arg.name}'")
            return TensorInfo(arg.name, shape, dtype, scale, zero_point)
        if dtype == np.dtype(np.uint8):
            # ONNX carries no scale on graph inputs; a uint8 image input means raw pixels 0..255.
            return TensorInfo(arg.name, shape, dtype, 1.0, 0)
        return TensorInfo(arg.name, shape, dtype)  # bind() refuses it: no parameters, no guessing
    return TensorInfo(arg.name, shape, dtype)


class OrtClassifier(Classifier):
    """An ``.onnx`` model on onnxruntime.

    int8 graph inputs and int8/uint8 outputs need ``{"scale", "zero_point"}`` under
    ``"input_quantization"`` / ``"output_quantization"`` in the embedded metadata (ONNX has no
    per-input scale); a uint8 input is fed the pixels 0..255 as they are. Models quantized inside
    (QDQ) with float I/O, the usual case, need nothing.

    Args:
        path: the ``.onnx`` file.
        threads: ``intra_op_num_threads``; None = onnxruntime's default (one per core).
        providers: execution providers in priority order; None = ``["CPUExecutionProvider"]``.

    Raises:
        ModelLoadError: missing, unreadable or not an ONNX model; unknown provider; not one
            image input / one output.
    """

    engine = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None) -> None:
        super().__init__(Path(path))
        path = self._path
        ort = _ort()
        providers = list(providers) if providers else ["CPUExecutionProvider"]
        unknown = [p for p in providers if p not in ort.get_available_providers()]
        if unknown:
            raise ModelLoadError(
                f"{path}: execution provider(s) {', '.join(unknown)} not available "
                f"(this onnxruntime offers {', '.join(ort.get_available_providers())})"
            )
        if not path.is_file():
            raise ModelLoadError(f"{path}: model file not found")
        here = cpu_features()
        self.x64_precision = x64_precision_mode(here)
        self._sess = self._open(ort, path, threads, providers)
        ins, outs = self._sess.get_inputs(), self._sess.get_outputs()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelLoadError(
                f"{path}: expected 1 input and 1 output, model has {len(ins)} inputs and {len(outs)} outputs"
            )
        self.embedded = self._read_metadata()
        check_validated_cpu(path, self.embedded, here, self.x64_precision)
        meta = self.embedded or {}
        self._in = _tensor_info(path, ins[0], meta.get("input_quantization"))
        self._out = _tensor_info(path, outs[0], meta.get("output_quantization"))
        self._in_name, self._out_name = ins[0].name, outs[0].name

    def _open(self, ort, path: Path, threads: int | None, providers: list[str]):
        """The session, with ``session.x64quantprecision`` when :attr:`x64_precision` is set.

        onnxruntime 1.32 cannot apply that option to graphs whose weight DequantizeLinear nodes share
        constants: tf2onnx files of int8 TFLite models (``--onnx-int8 from-tflite``) written before
        export copied them apart (:mod:`edgeclf.export.onnx_qdq`) fail with "AddInitializedOrtValue
        Attempt to replace the existing tensor" (measured, benchmarks/results/avx2-emulation). Such a
        file is then opened without it, with one warning that its U8S8 products may saturate on this CPU.
        """
        def session(precision: bool):
            opts = ort.SessionOptions()
            opts.log_severity_level = 4  # fatal only: load errors are raised and reported as one line
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if threads is not None:
                opts.intra_op_num_threads = int(threads)
                opts.inter_op_num_threads = 1
            if precision:
                opts.add_session_config_entry(X64_PRECISION_KEY, "1")
            return ort.InferenceSession(str(path), sess_options=opts, providers=providers)

        try:
            return session(self.x64_precision)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph/... types
            error = exc
        if self.x64_precision:
            try:
                sess = session(False)
            except Exception:  # noqa: BLE001 - report the first error: the file itself is bad
                pass
            else:
                self.x64_precision = False
                log.warning("%s: onnxruntime cannot run this model with %s=1 (%s); opened without it, so its "
                            "int8 products may saturate on this CPU (re-export with --onnx-int8 "
                            "u8s8-reduce-range for an exact file)", path, X64_PRECISION_KEY, one_line(error))
                return sess
        raise ModelLoadError(f"{path}: onnxruntime cannot load the model ({one_line(error)})") from None

    def _read_metadata(self) -> dict | None:
        raw = self._sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            return None
        try:
            return parse_embedded(raw, str(self._path))
        except ManifestError as exc:
            raise ModelLoadError(str(exc)) from None

    @property
    def providers(self) -> list[str]:
        """Providers the session actually uses."""
        return list(self._sess.get_providers())

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run([self._out_name], {self._in_name: x})[0]

    def close(self) -> None:
        self._sess = None

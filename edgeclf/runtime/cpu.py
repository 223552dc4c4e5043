"""Which int8 kernels this CPU gets: the facts an int8 artifact's accuracy depends on (no TensorFlow).

The same int8 ``.onnx`` does not compute the same numbers on every CPU. onnxruntime's MLAS picks
its int8 matrix-multiply kernel per CPU at load time:

* x86 with AVX-512 VNNI, AVX-VNNI or AMX: ``VPDPBUSD`` / AMX tiles sum uint8 x int8 products in
  32 bits: exact (:attr:`Int8KernelClass.X86_VNNI`);
* x86 with AVX2 or AVX-512 but no VNNI: ``VPMADDUBSW`` adds each pair of uint8 x int8 products into
  a *saturating* int16 (255 x 127 x 2 = 64 770 > 32 767) before widening, so full-range int8
  weights can clip (:attr:`Int8KernelClass.X86_NO_VNNI`); onnxruntime's ``quantize_static``
  docstring recommends ``reduce_range=True`` (7-bit weights) there, and the session option
  ``session.x64quantprecision`` makes the runtime use exact U8U8 kernels instead;
* x86 without AVX2 (:attr:`Int8KernelClass.X86_SSE`): SSE kernels (Linux builds widen to 16 bits
  first: exact; the Windows SSE4.1 build saturates like AVX2);
* 64-bit ARM (:attr:`Int8KernelClass.ARM64`): NEON / dot-product kernels accumulate in 32 bits: exact.

Sources: onnxruntime ``onnxruntime/quantization/quantize.py`` (``quantize_static`` "Choosing
parameters for CPU inference"), https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html
(FAQ: VPMADDUBSW saturation, reduce_range, U8U8), microsoft/onnxruntime#12088 (``session.x64quantprecision``),
#12072, #6545; Intel oneDNN "Nuances of int8 computations".

For tests and for measuring another machine's choice, the environment overrides what is read:
``EDGECLF_CPU_FLAGS`` (space/comma separated ``/proc/cpuinfo`` flags, e.g. ``"avx2 fma"``) and
``EDGECLF_CPU_ARCH`` (``platform.machine()`` style, e.g. ``x86_64``, ``aarch64``).
"""

from __future__ import annotations

import enum
import functools
import os
import platform
from dataclasses import asdict, dataclass
from typing import Any

from edgeclf._cpuinfo import FLAGS_ENV, read_cpuinfo, split_flags

ARCH_ENV = "EDGECLF_CPU_ARCH"
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # Linux /proc/cpuinfo spellings
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")
_ARM64 = ("aarch64", "arm64", "armv8", "armv9")


class Int8KernelClass(str, enum.Enum):
    """The kind of int8 matrix-multiply kernel onnxruntime (MLAS) runs on a CPU (see the module docstring)."""

    X86_VNNI = "x86-vnni"          # exact 32-bit accumulation (VPDPBUSD / AMX)
    X86_NO_VNNI = "x86-no-vnni"    # AVX2 / AVX-512 without VNNI: VPMADDUBSW int16 pair sums saturate
    X86_SSE = "x86-sse"            # no AVX2
    ARM64 = "arm64"                # NEON / sdot / udot, 32-bit accumulation
    OTHER = "other"

    @property
    def saturates_u8s8(self) -> bool:
        """True where onnxruntime's uint8 x int8 kernels can clip full-range int8 weights (x86 without VNNI)."""
        return self is Int8KernelClass.X86_NO_VNNI


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU facts an int8 artifact was validated on (``ArtifactEntry.validated_on``).

    Attributes:
        arch: ``platform.machine()`` lower-cased, e.g. ``x86_64``, ``aarch64``.
        avx2, avx512, vnni, amx: x86 features (``avx512`` = AVX-512F; ``vnni`` = AVX-512 VNNI or
            AVX-VNNI; ``amx`` = AMX-INT8); all False elsewhere.
        dotprod: ARM ``asimddp`` (sdot/udot); False elsewhere.
        int8_kernel_class: :class:`Int8KernelClass` value derived from the above.
        model_name: the CPU model string if known, else "" (informative only).
    """

    arch: str
    avx2: bool = False
    avx512: bool = False
    vnni: bool = False
    amx: bool = False
    dotprod: bool = False
    int8_kernel_class: str = Int8KernelClass.OTHER.value
    model_name: str = ""

    @property
    def kernel_class(self) -> Int8KernelClass:
        """:attr:`int8_kernel_class` as the enum (OTHER for a value this edgeclf does not know)."""
        try:
            return Int8KernelClass(self.int8_kernel_class)
        except ValueError:
            return Int8KernelClass.OTHER

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CpuFeatures:
        """Parse a ``validated_on`` record; unknown keys are ignored. Raises TypeError/ValueError if malformed."""
        if not isinstance(d, dict) or "arch" not in d:
            raise ValueError(f"validated_on is not a CPU record: {d!r}")
        known = {k: d[k] for k in ("arch", "avx2", "avx512", "vnni", "amx", "dotprod", "int8_kernel_class",
                                   "model_name") if k in d}
        return cls(**known)


def kernel_class(arch: str, flags: set[str]) -> Int8KernelClass:
    """The :class:`Int8KernelClass` of a CPU with ``platform.machine()``-style ``arch`` and cpuinfo ``flags``."""
    arch = arch.lower()
    if arch in _ARM64:
        return Int8KernelClass.ARM64
    if arch not in _X86:
        return Int8KernelClass.OTHER
    if flags & set(_VNNI_FLAGS):
        return Int8KernelClass.X86_VNNI
    if "avx2" in flags or "avx512f" in flags:
        return Int8KernelClass.X86_NO_VNNI
    return Int8KernelClass.X86_SSE


def features_from_flags(arch: str, flags: set[str], model_name: str = "") -> CpuFeatures:
    """:class:`CpuFeatures` from an architecture name and a set of lower-case cpuinfo flags."""
    arch = arch.lower()
    x86 = arch in _X86
    return CpuFeatures(
        arch=arch, avx2=x86 and "avx2" in flags, avx512=x86 and "avx512f" in flags,
        vnni=x86 and bool(flags & {"avx512_vnni", "avx_vnni"}), amx=x86 and "amx_int8" in flags,
        dotprod=arch in _ARM64 and "asimddp" in flags,
        int8_kernel_class=kernel_class(arch, flags).value, model_name=model_name)


@functools.lru_cache(maxsize=8)
def _detect(flags_env: str | None, arch_env: str | None) -> CpuFeatures:
    arch = (arch_env or platform.machine() or "unknown").lower()
    if flags_env is not None:
        return features_from_flags(arch, split_flags(flags_env), "simulated")
    flags, model = read_cpuinfo()
    if not flags and arch in _ARM64 and platform.system() == "Darwin":
        flags = {"asimddp"}  # every Apple Silicon core has the dot-product instructions
    return features_from_flags(arch, flags, model)


def cpu_features() -> CpuFeatures:
    """The :class:`CpuFeatures` of this machine (``/proc/cpuinfo`` on Linux; the architecture elsewhere).

    ``EDGECLF_CPU_FLAGS`` / ``EDGECLF_CPU_ARCH`` replace what is read (tests, what-if measurements);
    the result is cached per value of those variables.
    """
    return _detect(os.environ.get(FLAGS_ENV), os.environ.get(ARCH_ENV))

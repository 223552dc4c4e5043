"""Facts about the machine a benchmark or a training run ran on (CPU, SIMD flags, cores, library versions,
load): bench's machine.json and the model directory's machine.json (:mod:`edgeclf.train.loop`).

A leaf module (``_cpuinfo`` and ``_versions`` only), so training and bench both use it. Never imports
TensorFlow: versions come from package metadata (:func:`edgeclf._versions.tool_versions`).
"""

from __future__ import annotations

import os
import platform

from edgeclf._cpuinfo import read_cpu_id, read_cpuinfo
from edgeclf._versions import tool_versions

# CPU flags that decide which kernels the engines can use (x86 names as in /proc/cpuinfo).
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
# ARM (Raspberry Pi) equivalents.
ARM_FLAGS = ("neon", "asimd", "asimddp", "asimdhp", "sve", "i8mm", "bf16")


def _cpuinfo() -> tuple[str, set[str]]:
    flags, model = read_cpuinfo()
    return model or platform.processor() or platform.machine(), flags


def _mem_total_mb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    """1/5/15-minute load averages (other work on the machine skews timings), or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_id_label(cpu_id: dict | None, stepping: bool = True) -> str:
    """``"family 26 model 2 stepping 1"`` from machine.json's ``cpu_id`` (``stepping=False`` leaves the
    stepping out), or ``""`` when it is missing or empty (results written before it was recorded)."""
    keys = [("cpu family", "family"), ("model", "model")] + ([("stepping", "stepping")] if stepping else [])
    return " ".join(f"{label} {cpu_id[k]}" for k, label in keys if cpu_id and cpu_id.get(k))


def machine_facts(threads: int | None = None) -> dict:
    """A JSON-ready dict: cpu_model, cpu_id (vendor, family, model, stepping, microcode from
    /proc/cpuinfo: a VM's model name alone may not tell the generation), simd flags present,
    logical/usable cores, memory, OS, Python and library versions, the engine thread count used
    (``threads``; None where the work used the library's default, e.g. training), and the current load
    average (1/5/15 min: other work on the machine skews timings)."""
    model, flags = _cpuinfo()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": model,
        "cpu_id": read_cpu_id(),
        "arch": platform.machine(),
        "simd_flags": {f: f in flags for f in (SIMD_FLAGS if platform.machine() in ("x86_64", "AMD64")
                                               else ARM_FLAGS)},
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "mem_total_mb": _mem_total_mb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": tool_versions(),
        "threads": threads,
        "load_average_start": load_average(),
    }

"""This machine's CPU flags, read from ``/proc/cpuinfo`` (no TensorFlow; used by the runtime and training).

For tests and for measuring another machine's choice, the environment overrides what is read:
``EDGECLF_CPU_FLAGS`` (space/comma separated ``/proc/cpuinfo`` flags, e.g. ``"avx2 fma"``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

FLAGS_ENV = "EDGECLF_CPU_FLAGS"


def split_flags(text: str) -> set[str]:
    """``"avx2 fma, sse4_2"`` -> ``{"avx2", "fma", "sse4_2"}`` (lower case; spaces or commas)."""
    return {f for f in re.split(r"[\s,]+", text.strip().lower()) if f}


def _fields(path: Path) -> list[tuple[str, str]]:
    """(lower-case key, value) of every line of a ``/proc/cpuinfo``-style file (("", "") for a blank
    line between processors); [] if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    pairs = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        pairs.append((key.strip().lower(), value))
    return pairs


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[set[str], str]:
    """(flags, model name) of the first processor in a Linux ``/proc/cpuinfo``; empty if unreadable.

    The model is the first ``model name``, else (ARM boards such as the Raspberry Pi) the
    ``Hardware`` or ``cpu model`` line."""
    flags, names = set(), {}
    for key, value in _fields(path):
        if key in ("flags", "features") and not flags:   # x86 "flags", ARM "Features"
            flags = split_flags(value)
        elif key in ("model name", "hardware", "cpu model") and value.strip():
            names.setdefault(key, value.strip())
    return flags, names.get("model name") or names.get("hardware") or names.get("cpu model", "")


#: ``/proc/cpuinfo`` keys that identify an x86 CPU's generation where ``model name`` does not (a VM's
#: "AMD EPYC" is a Zen 4 at family 25 model 17 and a Zen 5 at family 26 model 2).
CPU_ID_KEYS = ("vendor_id", "cpu family", "model", "stepping", "microcode")


def read_cpu_id(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """``{"vendor_id", "cpu family", "model", "stepping", "microcode"}`` of the first processor, as
    written in ``/proc/cpuinfo`` (only the keys present; empty if unreadable or not x86)."""
    found: dict[str, str] = {}
    for key, value in _fields(path):
        if not key and found:  # the blank line after the first processor
            break
        if key in CPU_ID_KEYS and key not in found:
            found[key] = value.strip()
    return found


def cpu_flags() -> set[str]:
    """This CPU's flags: ``EDGECLF_CPU_FLAGS`` if set, else ``/proc/cpuinfo``'s (empty where unreadable)."""
    env = os.environ.get(FLAGS_ENV)
    return split_flags(env) if env is not None else read_cpuinfo()[0]

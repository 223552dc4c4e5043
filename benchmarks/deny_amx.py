"""Run a command with Intel AMX tile data denied to it, to see what AMX kernels change.

    python benchmarks/deny_amx.py python benchmarks/litert_speedup.py MODEL_DIR

Linux x86-64 only. A process must ask the kernel for AMX tile state with
``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`` before it may run AMX instructions
(Documentation/arch/x86/xstate.rst). XNNPACK, the kernel library under LiteRT, makes that call at
start-up (seen with ``strace -e trace=arch_prctl`` on ai-edge-litert 2.3) and uses its
``avx512amx`` int8 GEMM micro-kernels only when it succeeds. This script installs a seccomp filter
(``PR_SET_SECCOMP``, inherited across ``exec``) that makes exactly that request fail with EPERM,
then replaces itself with the command. Everything else runs as usual, so the command's own
timings show the same code with and without AMX.

Not part of edgeclf: a diagnostic for the int8 speed-ups in ``benchmarks/results/``.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, EPERM = 0x7FFF0000, 0x00050000, 1
AUDIT_ARCH_X86_64, NR_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM = 0xC000003E, 158, 0x1023
LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


def deny_amx() -> None:
    """Install the filter in this process (and so in everything it executes).

    Raises:
        OSError: not Linux x86-64, or the kernel refused the filter.
    """
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise OSError("deny_amx needs Linux on x86-64")
    # seccomp_data: nr at offset 0, arch at 4, args[0] (low 32 bits, little-endian) at 16
    program = [
        (LD_W_ABS, 0, 0, 4), (JEQ_K, 0, 5, AUDIT_ARCH_X86_64),
        (LD_W_ABS, 0, 0, 0), (JEQ_K, 0, 3, NR_ARCH_PRCTL),
        (LD_W_ABS, 0, 0, 16), (JEQ_K, 0, 1, ARCH_REQ_XCOMP_PERM),
        (RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        (RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    filters = (_Filter * len(program))(*[_Filter(*ins) for ins in program])
    prog = _Prog(len(program), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or \
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0):
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter refused: {os.strerror(err)}")


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__.split("\n\n")[1])
    deny_amx()
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])

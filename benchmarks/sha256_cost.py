"""Cost of the artifact integrity check: sha256 of model files of several sizes.

``python benchmarks/sha256_cost.py`` prints, per file size, the median wall time of
:func:`edgeclf._io.sha256_file` (what :func:`edgeclf.runtime.loader.verify_artifact` runs) over 7
runs with the file in the page cache, and the throughput in MB/s. The figure quoted in
``verify_artifact``'s docstring and in the README comes from this script.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edgeclf._io import sha256_file

SIZES_BYTES = (40_000, 1_000_000, 10_000_000, 100_000_000)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES_BYTES:
            path = Path(tmp) / f"{size}.bin"
            path.write_bytes(os.urandom(size))
            sha256_file(path)  # warm the page cache
            times = []
            for _ in range(7):
                t0 = time.perf_counter()
                sha256_file(path)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            print(f"{size / 1e6:10.3f} MB  {med * 1e3:9.3f} ms  {size / med / 1e6:8.0f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write a large photo-like folder for the streaming benchmark: CIFAR-10 JPEGs upscaled to SIZE x SIZE.

``python benchmarks/make_stream_folder.py SRC OUT --n 100000 --test-n 2000 --size 224``

SRC is a CIFAR-10 JPEG tree (``SRC/train/<class>/*.jpg``, ``SRC/test/<class>/*.jpg``). Every source
image is upscaled (OpenCV INTER_CUBIC) and written as a JPEG (quality 90) to
``OUT/train/<class>/`` until N training images exist; when N exceeds the source count, later passes
use the mirrored image with a small random crop, so no two files are identical. ``OUT/test/`` gets
``test-n`` images the same way. Existing files are kept (a rerun only fills in what is missing).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np


def _jobs(src: Path, out: Path, n: int) -> list[tuple[str, str, int]]:
    classes = sorted(p.name for p in src.iterdir() if p.is_dir())
    files = {c: sorted((src / c).glob("*.jpg")) for c in classes}
    jobs, k = [], 0
    per_class = -(-n // len(classes))
    for c in classes:
        for i in range(per_class):
            if k >= n:
                break
            f = files[c][i % len(files[c])]
            jobs.append((str(f), str(out / c / f"{i // len(files[c])}_{f.stem}.jpg"), i // len(files[c])))
            k += 1
    return jobs


def _write(job: tuple[str, str, int], size: int) -> int:
    src, dst, variant = job
    if Path(dst).is_file():
        return 0
    img = cv2.imread(src, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"Error: {src}: not a decodable image")
    if variant:
        rng = np.random.default_rng(hash(dst) & 0xFFFFFFFF)
        img = img[:, ::-1]
        dy, dx = rng.integers(0, 3, 2)
        img = img[dy:dy + img.shape[0] - 2, dx:dx + img.shape[1] - 2]
    big = cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    tmp = Path(dst).with_suffix(".tmp")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(dst)
    return 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=100_000, help="training images")
    p.add_argument("--test-n", type=int, default=2_000, help="test images")
    p.add_argument("--size", type=int, default=224, help="side in pixels")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    if not (a.src / "train").is_dir():
        sys.exit(f"Error: {a.src}/train: not found (expected a CIFAR-10 JPEG tree)")
    written = 0
    with ProcessPoolExecutor(a.workers) as pool:
        for split, n in (("train", a.n), ("test", a.test_n)):
            jobs = _jobs(a.src / split, a.out / split, n)
            written += sum(pool.map(_write, jobs, [a.size] * len(jobs), chunksize=256))
    print(f"{a.out}: {a.n} train + {a.test_n} test {a.size}x{a.size} JPEGs ({written} written now)")


if __name__ == "__main__":
    main()

"""Make a 640x480 test video from CIFAR-10 test images (for ``edgeclf webcam --headless`` runs).

Each frame shows one test image upscaled to 480x480 (nearest neighbour, like a close-up on a
camera) centred on a grey 640x480 canvas; ``--hold`` frames per image.

    python benchmarks/make_video.py ../shared/datasets/cifar10-jpg/test cifar_test_640x480.mp4 --frames 3000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("test_dir", type=Path, help="DIR/<class>/*.jpg")
    p.add_argument("out", type=Path, help="output .mp4 (mp4v)")
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--hold", type=int, default=1, help="frames per image")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    files = sorted(a.test_dir.glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"{a.test_dir}: no <class>/*.jpg files")
    rng = np.random.default_rng(a.seed)
    order = rng.permutation(len(files))
    tmp = a.out.with_name(f".{a.out.stem}.tmp{a.out.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), a.fps, (640, 480))
    canvas = np.full((480, 640, 3), 114, np.uint8)
    for f in range(a.frames):
        if f % a.hold == 0:
            img = cv2.imread(str(files[order[(f // a.hold) % len(files)]]))
            canvas[:, 80:560] = cv2.resize(img, (480, 480), interpolation=cv2.INTER_NEAREST)
        writer.write(canvas)
    writer.release()
    tmp.replace(a.out)
    print(f"wrote {a.frames} frames 640x480 to {a.out}")


if __name__ == "__main__":
    main()

"""``python -m edgeclf.data.samples DATA OUT_DIR``: write a few labelled test images as ``OUT_DIR/<class>/*.png``.

Used by ``make demo`` to have real photos to run ``edgeclf predict`` on, whichever data source
(``cifar10``, ``fashion_mnist`` or a directory) trained the model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from edgeclf.errors import EdgeclfError, one_line


def write_samples(source: str, out_dir: Path, per_class: int, seed: int = 0) -> int:
    """Write ``per_class`` test images of each class to ``out_dir/<class>/NNNN.png``; returns the count.

    Raises:
        edgeclf.errors.DataError: ``source`` cannot be loaded.
        OSError: a file cannot be written (naming it; nothing half-written is left).
    """
    from edgeclf._io import write_bytes
    from edgeclf.data import DataConfig, load_dataset

    ds = load_dataset(DataConfig(source=source, val_split=0.0, seed=seed), progress=False)
    rng = np.random.default_rng(seed)
    n = 0
    for c, name in enumerate(ds.class_names):
        idx = np.flatnonzero(ds.y_test == c)
        for i in rng.choice(idx, size=min(per_class, len(idx)), replace=False):
            img = ds.x_test[i]
            img = img[:, :, 0] if img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            ok, png = cv2.imencode(".png", img)
            if not ok:
                raise RuntimeError(f"OpenCV could not encode a {img.shape} {img.dtype} image as PNG")  # a bug
            write_bytes(out_dir / name / f"{i:05d}.png", png.tobytes())  # atomic; OSError names the file
            n += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("data", help="cifar10, fashion_mnist or a dataset directory")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--per-class", type=int, default=2)
    a = p.parse_args()
    try:
        n = write_samples(a.data, a.out_dir, a.per_class)
    except EdgeclfError as exc:
        sys.exit(f"Error: {one_line(exc)}")
    except OSError as exc:
        sys.exit(f"Error: {exc.filename}: {exc.strerror or one_line(exc)}" if exc.filename else f"Error: {one_line(exc)}")
    print(f"wrote {n} test images to {a.out_dir}")


if __name__ == "__main__":
    main()

"""Image sources for batch prediction: files, directories (recursive) and glob patterns.

Also detects labelled folders (``<root>/<class>/<file>.jpg`` with ``<class>`` one of the model's
labels) so predictions can be scored.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from edgeclf.errors import SourceError  # noqa: F401  (re-exported)
from edgeclf.preprocess import IMAGE_EXTENSIONS, ImageError, load_image

_GLOB_CHARS = set("*?[")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def expand_image_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files, directories (recursively, image extensions only, sorted) and glob patterns.

    Explicitly named files are kept whatever their extension (a corrupt or non-image file then
    fails at decode time with a one-line warning). Duplicates are dropped, order is preserved.

    Returns:
        the image file paths.

    Raises:
        SourceError: a path does not exist, a pattern matches nothing, or nothing at all was found.
    """
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for raw in paths:
        text = str(raw)
        p = Path(text)
        if p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file() and _is_image(q)):
                add(f)
        elif p.is_file():
            add(p)
        elif _GLOB_CHARS & set(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and _is_image(m)]
            if not files:
                raise SourceError(f"{text}: pattern matches no image files")
            for f in files:
                add(f)
        else:
            raise SourceError(f"{text}: no such file or directory")
    if not out:
        raise SourceError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(map(str, paths))}")
    return out


def folder_labels(files: list[Path], labels: list[str]) -> np.ndarray | None:
    """True class indices from the parent folder names, if *every* file sits in a folder named
    after one of ``labels`` (``.../cat/001.jpg``); otherwise None (no accuracy is reported).

    Returns:
        int64 (N,) class indices, or None.
    """
    index = {name: i for i, name in enumerate(labels)}
    out = np.empty(len(files), dtype=np.int64)
    for i, f in enumerate(files):
        cls = index.get(f.parent.name)
        if cls is None:
            return None
        out[i] = cls
    return out


def iter_images(files: Iterable[Path]) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
    """Decode each file: yields ``(path, uint8 (H, W, 3) RGB image, None)`` or, for a file that
    cannot be decoded, ``(path, None, one-line reason)``."""
    for f in files:
        try:
            yield f, load_image(f), None
        except ImageError as exc:
            yield f, None, str(exc)

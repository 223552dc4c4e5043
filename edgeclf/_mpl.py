"""Matplotlib helpers shared by training and bench plots: the Agg backend, imported lazily, and
PNGs written atomically."""

from __future__ import annotations

from pathlib import Path

from edgeclf._io import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend.

    Raises:
        ImportError: matplotlib is not installed (it comes with ``edgeclf[train]``).
    """
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover
        raise ImportError("plots need matplotlib: pip install 'edgeclf[train]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` as a 110-dpi PNG (atomically) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    pyplot().close(fig)
    return path

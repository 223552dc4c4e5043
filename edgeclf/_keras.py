"""The only module that imports TensorFlow and tf_keras.

tensorflow-model-optimization works only with Keras 2 (``tf_keras``), so ``TF_USE_LEGACY_KERAS=1``
is set here before TensorFlow is imported; every other module gets ``tf`` and ``keras`` from here.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"

try:
    import tensorflow as tf
    import tf_keras as keras
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "edgeclf training/export needs TensorFlow and tf_keras: pip install 'edgeclf[train]' "
        "(the runtime alone only needs 'edgeclf[runtime]')"
    ) from exc

__all__ = ["keras", "set_seed", "tf"]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (``keras.utils.set_random_seed``) for reproducible runs."""
    keras.utils.set_random_seed(int(seed))

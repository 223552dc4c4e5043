"""Test helper: the 2x2-patch statistics a whitening stem (``--stem whiten``) is computed from, recomputed
independently of ``edgeclf.models.cnn``."""

from __future__ import annotations

import numpy as np

from edgeclf.models.cnn import WHITEN_EPS


def patches_2x2(images: np.ndarray) -> np.ndarray:
    """The 2x2 'valid' patches of ``images`` (uint8 or float (N, H, W, 3), 0-255) in the model's [-1, 1]
    input scale: float (N * (H-1) * (W-1), 12), in the layout of a 2x2 kernel's (row, col, channel)."""
    x = np.asarray(images, np.float32) / 127.5 - 1.0
    h, w = x.shape[1] - 1, x.shape[2] - 1
    return np.stack([x[:, i:i + h, j:j + w] for i in (0, 1) for j in (0, 1)], axis=3).reshape(-1, 12)


def whitened_variances(patches: np.ndarray) -> np.ndarray:
    """The variance each whitening filter's response must have on ``patches``: l / (l + floor) for the
    eigenvalues l of their second-moment matrix, largest first (float64 (12,)), floor = ``WHITEN_EPS`` x
    the mean eigenvalue (1 where l is far above the floor)."""
    eigenvalues = np.linalg.eigvalsh(patches.T.astype(np.float64) @ patches / len(patches))[::-1]
    return eigenvalues / (eigenvalues + WHITEN_EPS * eigenvalues.mean())


def response_second_moment(patches: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The second-moment matrix (12, 12) of the first 12 filters' (pre-ReLU) responses to ``patches``;
    ``kernel``: the stem's (2, 2, 3, 24) kernel."""
    response = patches @ kernel[..., :12].reshape(12, 12)
    return response.T @ response / len(response)

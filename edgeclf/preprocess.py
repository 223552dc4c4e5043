"""The one definition of how an image becomes a model input (pure NumPy/OpenCV).

Training, the representative dataset used for int8 calibration, validation and the runtime all
call these functions, so a model sees the same pixels everywhere:

* colour order: RGB (OpenCV decodes BGR; it is converted here, once);
* channels: 3, or 1 for greyscale models (ITU-R BT.601 luma, ``cv2.COLOR_RGB2GRAY``);
* size: resized to the model's declared input by :func:`resize_image` (``cv2.INTER_AREA`` when
  shrinking, which avoids aliasing, ``cv2.INTER_LINEAR`` when enlarging);
* dtype and range: float32 in [0, 255]. Normalisation (scaling, mean/std) lives *inside* the
  edgeclf models, so an exported file is self-contained.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edgeclf.errors import ImageError  # noqa: F401  (re-exported)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file.

    Args:
        path: a jpg/png/bmp/webp (anything OpenCV decodes) file.

    Returns:
        uint8 (H, W, 3) RGB, 0-255. Greyscale files are expanded to 3 channels and alpha dropped.

    Raises:
        ImageError: the file does not exist, cannot be read, or is not a decodable image.
    """
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)  # works with non-ASCII paths, unlike cv2.imread
    except OSError as exc:
        raise ImageError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if raw.size == 0:
        raise ImageError(f"{path}: empty file")
    try:
        img = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    except cv2.error:  # OpenCV asserts on a header declaring more pixels than CV_IO_MAX_IMAGE_PIXELS
        raise ImageError(f"{path}: image too large to decode (more pixels than OpenCV allows)") from None
    del raw
    if img is None:
        raise ImageError(f"{path}: not a decodable image (corrupt or unsupported format)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: a 10000x10000 photo costs 300 MB, not 600


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """Convert an OpenCV BGR frame, uint8 (H, W, 3), to RGB (a camera frame's only colour step)."""
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an image to ``height`` x ``width`` pixels by edgeclf's one resize rule.

    ``cv2.INTER_AREA`` when shrinking (both sides at least the target; avoids aliasing),
    ``cv2.INTER_LINEAR`` when enlarging either side. Training data, the runtime and the camera
    loop all resize through here.

    Args:
        image: (H, W) or (H, W, C) array of any dtype OpenCV resizes (uint8, float32), any colour order.

    Returns:
        (height, width) or (height, width, C), same dtype; ``image`` itself if already that size.
        A (H, W, 1) input keeps its channel axis.
    """
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    interp = cv2.INTER_AREA if (h >= height and w >= width) else cv2.INTER_LINEAR
    out = cv2.resize(image, (width, height), interpolation=interp)
    return out[:, :, None] if image.ndim == 3 and out.ndim == 2 else out


def to_model_input(image: np.ndarray, height: int, width: int, channels: int = 3) -> np.ndarray:
    """Turn one RGB image into a model input.

    Args:
        image: uint8 (H, W, 3) RGB or (H, W) / (H, W, 1) grey, 0-255.
        height, width: the model's declared input size in pixels.
        channels: 3 (RGB) or 1 (grey).

    Returns:
        float32 (height, width, channels), values in [0, 255].

    Raises:
        ValueError: ``image`` is not 2-D or 3-D with 1 or 3 channels, or ``channels`` not 1/3.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = img if channels == 1 else cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.ndim == 3 and img.shape[2] == 3:
        if channels == 1:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    else:
        raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {img.shape}")
    out = resize_image(img, height, width).astype(np.float32)
    if out.ndim == 2:
        out = out[:, :, None]
    return out


def to_model_batch(images: list[np.ndarray] | np.ndarray, height: int, width: int, channels: int = 3) -> np.ndarray:
    """Apply :func:`to_model_input` to each image: -> float32 (N, height, width, channels), 0-255."""
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1:] == (height, width, channels):
        return images.astype(np.float32, copy=False)
    return np.stack([to_model_input(im, height, width, channels) for im in images]).astype(np.float32, copy=False)

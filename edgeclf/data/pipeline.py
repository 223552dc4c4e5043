"""tf.data input pipelines: shuffling, batching, prefetching and on-the-fly augmentation.

Augmentation runs here, on whole batches (vectorised Keras preprocessing layers), never inside
the exported model.
"""

from __future__ import annotations

import numpy as np

from edgeclf._keras import keras, tf
from edgeclf.data.config import AugmentConfig
from edgeclf.data.dataset import ArraySplit


def _augmenter(cfg: AugmentConfig, height: int, width: int, seed: int):
    layers = []
    if cfg.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.translate_px:
        # nearest: whole-pixel shifts, as pad-and-crop (airbench, ResNet). Bilinear (Keras' default) shifts by
        # fractions of a pixel and so blurs every training image, which the test images never are.
        interpolation = "bilinear" if cfg.translate_subpixel else "nearest"
        layers.append(keras.layers.RandomTranslation(cfg.translate_px / height, cfg.translate_px / width,
                                                     fill_mode="reflect", interpolation=interpolation, seed=seed + 1))
    if cfg.rotate_deg:
        layers.append(keras.layers.RandomRotation(cfg.rotate_deg / 360.0, fill_mode="reflect", seed=seed + 2))
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="reflect", seed=seed + 3))
    return keras.Sequential(layers, name="augment") if layers else None


def _cutout(images: tf.Tensor, size: int) -> tf.Tensor:
    """Erase one random ``size`` x ``size`` square per image (set to 0), vectorised over the batch."""
    shape = tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    cy = tf.random.uniform([n, 1, 1], 0, h, dtype=tf.int32)
    cx = tf.random.uniform([n, 1, 1], 0, w, dtype=tf.int32)
    ys = tf.range(h)[None, :, None]
    xs = tf.range(w)[None, None, :]
    # rows/columns [c - size//2, c - size//2 + size): exactly size x size (clipped at the border)
    y0, x0 = cy - size // 2, cx - size // 2
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    return images * tf.cast(~inside, images.dtype)[..., None]


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, training: bool,
                 augment: AugmentConfig | None = None, seed: int = 0) -> tf.data.Dataset:
    """Build a batched tf.data pipeline over in-memory images.

    Args:
        x: uint8 (N, H, W, C) images, 0-255.
        y: per-image targets passed through unchanged: int32 (N,) labels, or e.g. float32 (N, K)
            soft targets (distillation).
        batch_size: images per batch.
        training: shuffle every epoch (reshuffle_each_iteration) and apply ``augment``.
        augment: augmentation config; ignored when ``training`` is False.
        seed: shuffle and augmentation seed.

    Yields:
        (float32 (B, H, W, C) in [0, 255], the batch's ``y`` rows) batches, prefetched.
    """
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return batch_images(ds, x.shape[1], x.shape[2], batch_size, training, augment, seed)


def batch_images(ds: tf.data.Dataset, height: int, width: int, batch_size: int, training: bool,
                 augment: AugmentConfig | None = None, seed: int = 0) -> tf.data.Dataset:
    """Batch a (uint8 (H, W, C) image, target) dataset, cast to float32, augment, prefetch.

    The one batching/augmentation tail of the in-memory (:func:`make_dataset`) and the streaming
    (:mod:`edgeclf.data.stream`) pipelines; the caller shuffles.

    Returns:
        tf.data of (float32 (B, H, W, C) in [0, 255], targets) batches; ``augment`` applies only when
        ``training``. Its auto-shard policy is DATA (each tf.distribute worker keeps its share of every
        batch).
    """
    ds = ds.batch(batch_size, drop_remainder=False)
    ds = ds.map(lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment is not None:
        aug = _augmenter(augment, height, width, seed)
        if aug is not None:
            # bilinear rotation/zoom can overshoot 255 by float rounding (255.00002): clip to the pixel range
            ds = ds.map(lambda a, b: (tf.clip_by_value(aug(a, training=True), 0.0, 255.0), b),
                        num_parallel_calls=tf.data.AUTOTUNE)
        if augment.cutout_px:
            ds = ds.map(lambda a, b: (_cutout(a, augment.cutout_px), b), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def source_batches(source, batch_size: int, training: bool, augment: AugmentConfig | None = None, seed: int = 0,
                   targets: np.ndarray | None = None) -> tf.data.Dataset:
    """Batches of an image source (:mod:`edgeclf.data.dataset`): in memory (:class:`ArraySplit`, via
    :func:`make_dataset`) or streamed (:class:`edgeclf.data.stream.FileSplit`, via its ``batches``).

    Args:
        source: the split.
        batch_size, training, augment, seed: as for :func:`make_dataset`.
        targets: one row per image of ``source`` (e.g. distillation targets, float32 (N, 2C));
            None = its int32 labels.

    Returns:
        tf.data of (float32 (B, H, W, C) in [0, 255], targets rows).
    """
    if isinstance(source, ArraySplit):
        y = source.labels if targets is None else targets
        return make_dataset(source.x, y, batch_size, training, augment, seed)
    return source.batches(batch_size, training, augment, seed, targets)


def indexed_batches(source, batch_size: int) -> tf.data.Dataset:
    """Un-shuffled, un-augmented batches of (float32 (B, H, W, C), int64 (B,) indices into ``source.labels``);
    a streamed source leaves out the files that fail to decode."""
    if isinstance(source, ArraySplit):
        return make_dataset(source.x, np.arange(len(source), dtype=np.int64), batch_size, False)
    return source.indexed_batches(batch_size)

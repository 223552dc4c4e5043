"""Typed configuration of the input data (validated once, saved in ``config.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgeclf.errors import ConfigError

#: What a config.json's ``augment`` written before a field existed was trained with (as
#: ``edgeclf.models.config.BEFORE_FIELD`` for the model): ``translate_subpixel`` until 2026-12-02.
AUGMENT_BEFORE_FIELD = {"translate_subpixel": True}


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly training augmentation (applied in the tf.data pipeline, never in the model).

    Attributes:
        flip: random horizontal flip.
        translate_px: random translation by a whole number of pixels, up to this many (pad-reflect then
            random crop, no resampling; the standard CIFAR recipe of He et al. 2016 uses 4 px at 32x32).
        rotate_deg: random rotation up to +/- this many degrees (0 disables).
        zoom: random zoom up to +/- this fraction (0 disables).
        cutout_px: side of one random square erased per image (DeVries & Taylor 2017; 0 disables).
        translate_subpixel: shift by fractions of a pixel with bilinear resampling instead (Keras'
            ``RandomTranslation`` default), which blurs the training images. What edgeclf did until
            2026-12-02 (round 2, session 14): a ``config.json`` without this field reads as True, so
            ``--resume`` continues such a run as it started. No CLI flag.
    """

    flip: bool = True
    translate_px: int = 4
    rotate_deg: float = 0.0
    zoom: float = 0.0
    cutout_px: int = 0
    translate_subpixel: bool = False

    def __post_init__(self) -> None:
        if self.translate_px < 0 or self.rotate_deg < 0 or self.zoom < 0 or self.cutout_px < 0:
            raise ConfigError("augmentation amounts must be >= 0")
        if self.zoom >= 1:
            raise ConfigError(f"zoom must be < 1, got {self.zoom}")

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        """The AugmentConfig a saved ``config.json`` describes; a field it lacks takes the value it was
        trained with (:data:`AUGMENT_BEFORE_FIELD`), not today's default.

        Raises:
            ConfigError: as the constructor.
        """
        return cls(**{**AUGMENT_BEFORE_FIELD, **d})


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split.

    Attributes:
        source: ``"cifar10"``, ``"fashion_mnist"`` or a directory of class folders (with
            ``train/`` and ``test/`` (or ``val/``) sub-folders, or one class-folder tree).
        image_size: (height, width) images are resized to; None = the dataset's native size
            (for folders: the most common size among the images).
        val_split: fraction of the training split held out for validation (stratified). For a
            single folder tree without a test split, the same fraction is also held out as test.
        limit: if set, a stratified random subset of at most this many training images (and at
            most ``limit // 5`` test images) for quick runs.
        seed: seed of the splits and of the subset.
        max_bad_fraction: abort when more than this fraction of image files can't be decoded.
        stream: image folders only: True decodes the images from disk batch by batch during
            training (:mod:`edgeclf.data.stream`), False decodes them all into memory first, None
            chooses by the estimated decoded size (:func:`edgeclf.data.use_streaming`).
        cache: streaming only: a directory where the decoded, resized images are cached on disk by
            ``tf.data.Dataset.cache`` after the first epoch (None = decode every epoch).
    """

    source: str = "cifar10"
    image_size: tuple[int, int] | None = None
    val_split: float = 0.1
    limit: int | None = None
    seed: int = 42
    max_bad_fraction: float = 0.05
    stream: bool | None = None
    cache: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_split < 0.9:
            raise ConfigError(f"val_split must be in [0, 0.9), got {self.val_split}")
        if self.limit is not None and self.limit < 10:
            raise ConfigError(f"limit must be >= 10 images, got {self.limit}")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 8):
            raise ConfigError(f"image_size must be (height, width) >= 8 px, got {self.image_size}")
        if self.cache and self.stream is False:
            raise ConfigError("cache (an on-disk cache of decoded images) only applies to the streaming path; "
                              "drop it or allow streaming")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size) if self.image_size else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DataConfig:
        d = dict(d)
        if d.get("image_size"):
            d["image_size"] = tuple(d["image_size"])
        return cls(**d)

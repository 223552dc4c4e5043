"""Knowledge distillation: a trained edgeclf model teaches a student (``edgeclf train --teacher``).

Method: Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network",
arXiv:1503.02531. Per image, with the teacher's / student's logits ``z_t`` / ``z_s`` and
temperature ``T``::

    loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(labels, p_s)

(the ``T^2`` keeps the soft term's gradients at the same scale as ``T`` changes). edgeclf models end
in a softmax, so ``log p`` stands in for the logits: ``softmax(log p / T)`` equals
``softmax(z / T)`` exactly, because ``log p = z - logsumexp(z)`` differs from ``z`` by a constant.

How the teacher's outputs reach the loss: the training targets become ``[one-hot labels | teacher
probabilities]``, float32 (N, 2C), so the student is compiled and fitted by the one
:func:`edgeclf.train.fit.fit` like any other run and stays a plain model (the saved ``model.keras``
holds no teacher). The teacher's probabilities are either computed once on the un-augmented
training images (``cached``) or for every augmented batch in the input pipeline (``per-batch``; the
teacher sees exactly the images the student sees). Imports TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclf._keras import keras, tf
from edgeclf.data.pipeline import indexed_batches, source_batches
from edgeclf.errors import ConfigError
from edgeclf.train.config import DistillConfig, TeacherTargets

#: Added to probabilities before the log: keeps log(0) finite and changes softened targets by < 1e-7
#: even at T = 4 (``(1e-30) ** (1 / 4) ~ 3e-8``), unlike Keras' 1e-7 clip.
_EPS = 1e-30


@dataclass(frozen=True)
class Teacher:
    """A loaded teacher and how to use it.

    Attributes:
        model: keras.Model, float32 (N, H, W, C) [0, 255] -> float32 (N, C) probabilities; frozen.
        alpha, temperature, targets: as in :class:`~edgeclf.train.config.DistillConfig`.
        source: the teacher's model directory, or directories (for messages).
        progress: show a progress bar while the cached outputs are computed.
    """

    model: object
    alpha: float
    temperature: float
    targets: TeacherTargets
    source: str
    progress: bool = False


def load_teacher(cfg: DistillConfig, input_shape: tuple[int, int, int], class_names: list[str],
                 progress: bool = False) -> Teacher:
    """Load ``cfg.teacher``'s ``model.keras`` files, check each fits the student's data, and combine them.

    One teacher without ``cfg.tta`` is used as it is. Several teachers, or ``cfg.tta``, become one
    frozen Keras model whose output is the mean of the teachers' probabilities on the image (and, with
    ``tta``, on its horizontal mirror): float32 (N, H, W, C) [0, 255] -> float32 (N, C), summing to 1.

    Args:
        cfg: the distillation settings.
        input_shape: the student's (H, W, C) input.
        class_names: the data's classes, in index order.
        progress: a progress bar while cached teacher outputs are computed (Teacher.progress).

    Raises:
        FileNotFoundError: no model.keras / labels.txt in a teacher directory.
        edgeclf.errors.ModelLoadError: model.keras is not loadable.
        edgeclf.errors.ConfigError: a teacher takes another input size or predicts other classes
            (the message names the teacher directory).
    """
    models = [_load_one(Path(t).expanduser(), input_shape, class_names) for t in cfg.teacher]
    model = models[0] if len(models) == 1 and not cfg.tta else _mean_teacher(models, input_shape, cfg.tta)
    model.trainable = False
    return Teacher(model, cfg.alpha, cfg.temperature, cfg.targets, ", ".join(cfg.teacher), progress)


def _load_one(d: Path, input_shape: tuple[int, int, int], class_names: list[str]):
    """One teacher directory's model.keras, checked against the student's input and classes
    (:func:`load_teacher` freezes it, or the model combining it)."""
    from edgeclf.models.io import load_keras_model

    labels_path = d / "labels.txt"
    if not labels_path.is_file():
        raise FileNotFoundError(f"{labels_path}: not found (is {d} an edgeclf model directory?)")
    teacher_classes = labels_path.read_text().splitlines()
    if teacher_classes != list(class_names):
        raise ConfigError(f"teacher {d}: classes {teacher_classes} differ from the data's {list(class_names)}")
    model = load_keras_model(d)
    t_shape = tuple(int(v) for v in model.input_shape[1:4])
    if t_shape != tuple(input_shape):
        raise ConfigError(f"teacher {d}: input {'x'.join(map(str, t_shape))} differs from the student's "
                          f"{'x'.join(map(str, input_shape))}; train the student with --input-size "
                          f"{t_shape[0]}x{t_shape[1]} or use a teacher trained at the student's size")
    if int(model.output_shape[-1]) != len(class_names):
        raise ConfigError(f"teacher {d}: {model.output_shape[-1]} outputs for {len(class_names)} classes")
    return model


class _MeanTeacher(keras.Model):
    """The mean of ``members``' float32 probabilities over the image and (``tta``) its mirror along the
    width axis (axis 2 of NHWC, the flip of :func:`edgeclf.runtime.base.flip_views`). A subclassed model,
    so teachers whose layers share names (two runs of one architecture) can be combined."""

    def __init__(self, members: list, tta: bool):
        super().__init__(name="teacher_mean", dtype="float32")
        self.members, self.tta = list(members), bool(tta)

    def call(self, x, training=False):
        views = [x, tf.reverse(x, axis=[2])] if self.tta else [x]
        outs = [tf.cast(m(v, training=False), tf.float32) for m in self.members for v in views]
        return tf.add_n(outs) / float(len(outs))


def _mean_teacher(models: list, input_shape: tuple[int, int, int], tta: bool):
    """:class:`_MeanTeacher` of ``models``, built for float32 (N, *input_shape) inputs."""
    model = _MeanTeacher(models, tta)
    model.build((None, *input_shape))
    return model


def _soft_log(p: tf.Tensor, temperature: float) -> tf.Tensor:
    """log softmax(log p / T) for probabilities p, float32 (B, C)."""
    return tf.nn.log_softmax(tf.math.log(tf.cast(p, tf.float32) + _EPS) / temperature, axis=-1)


def distillation_loss(num_classes: int, alpha: float, temperature: float, label_smoothing: float):
    """The Hinton et al. (2015) loss as a Keras loss function.

    Returns:
        ``loss(y_true, y_pred) -> float32 (B,)`` per-image losses in nats, where ``y_true`` is float32
        (B, 2C) ``[one-hot labels | teacher probabilities]`` and ``y_pred`` the student's (B, C)
        probabilities.
    """
    c, t = int(num_classes), float(temperature)

    def loss(y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        labels, teacher = y_true[:, :c], y_true[:, c:]
        ce = keras.losses.categorical_crossentropy(labels, y_pred, label_smoothing=label_smoothing)
        log_t, log_s = _soft_log(teacher, t), _soft_log(y_pred, t)
        kl = tf.reduce_sum(tf.exp(log_t) * (log_t - log_s), axis=-1)
        return alpha * t * t * kl + (1.0 - alpha) * ce

    loss.__name__ = "distillation_loss"
    return loss


def label_accuracy(num_classes: int):
    """Top-1 accuracy against the one-hot half of ``[labels | teacher]`` targets, named ``accuracy``."""
    c = int(num_classes)

    def accuracy(y_true, y_pred):
        return keras.metrics.categorical_accuracy(y_true[:, :c], y_pred)

    return keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")


def _cached_targets(teacher: Teacher, source, num_classes: int) -> np.ndarray:
    """float32 (N, 2C) ``[one-hot(labels) | teacher probabilities]``, one row per image of ``source``
    (an image source; rows of undecodable streamed files hold only the one-hot part).

    Through ``predict_on_batch``, the compiled predict function ``model.predict`` uses (which took
    ~25 % less CPU than eager calls for a MobileNetV2 teacher on 1800 CIFAR images)."""
    from tqdm.auto import tqdm

    probs = np.zeros((len(source), num_classes), np.float32)
    batches = tqdm(indexed_batches(source, 256), total=-(-len(source) // 256), unit="batch",
                   desc=f"teacher outputs ({len(source)} images)", disable=not teacher.progress, leave=False)
    for images, idx in batches:
        probs[np.asarray(idx)] = np.asarray(teacher.model.predict_on_batch(images), dtype=np.float32)
    return np.concatenate([np.eye(num_classes, dtype=np.float32)[source.labels], probs], axis=1)


def _with_weights(ds: tf.data.Dataset, class_weight: dict[int, float] | None, num_classes: int):
    """Add per-image weights ``class_weight[label]`` as a third element (Keras' sample weights)."""
    if not class_weight:
        return ds
    w = tf.constant([float(class_weight.get(i, 1.0)) for i in range(num_classes)], tf.float32)
    return ds.map(lambda a, b: (a, b, tf.gather(w, tf.argmax(b[:, :num_classes], axis=-1))))


def distill_datasets(teacher: Teacher, train, num_classes: int, batch_size: int, augment, seed: int,
                     validation, class_weight: dict[int, float] | None):
    """Training and validation pipelines whose targets carry the teacher's probabilities.

    Args:
        teacher: the loaded teacher.
        train: the training images, an image source (:mod:`edgeclf.data.dataset`: in memory or streamed).
        num_classes: C.
        batch_size, augment, seed: as for :func:`edgeclf.data.pipeline.make_dataset`.
        validation: optional image source; the teacher's outputs on it are computed once (it is
            never augmented).
        class_weight: optional per-class loss weights, applied as per-image sample weights.

    Returns:
        (train, val or None): tf.data of (float32 (B, H, W, C) images, float32 (B, 2C) targets
        [, float32 (B,) weights]).
    """
    model = teacher.model
    if teacher.targets is TeacherTargets.CACHED:
        train_ds = source_batches(train, batch_size, True, augment, seed, _cached_targets(teacher, train, num_classes))
    else:
        def add_teacher(a, b):
            p = tf.cast(model(a, training=False), tf.float32)
            return a, tf.concat([tf.one_hot(b, num_classes), p], axis=-1)

        train_ds = source_batches(train, batch_size, True, augment, seed).map(add_teacher).prefetch(tf.data.AUTOTUNE)
    val = None
    if validation is not None and len(validation):
        val = source_batches(validation, 256, False, targets=_cached_targets(teacher, validation, num_classes))
    return _with_weights(train_ds, class_weight, num_classes), val

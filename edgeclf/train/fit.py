"""The ONE optimizer factory and ``fit`` used by training, pruning and quantization-aware training.

``edgeclf.train.loop`` (training runs) and ``edgeclf.export.prune`` / ``edgeclf.export.qat``
(fine-tuning during export) all compile and fit through :func:`fit`, so the loss, the optimizer,
the learning-rate schedule and the input pipeline are defined once. Imports TensorFlow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeclf._keras import keras, tf
from edgeclf.data.config import AugmentConfig
from edgeclf.data.pipeline import source_batches
from edgeclf.train.budget import TimeBudget
from edgeclf.train.config import Optimizer
from edgeclf.train.distill import Teacher, distill_datasets, distillation_loss, label_accuracy
from edgeclf.train.ema import EMAValidation
from edgeclf.train.eta import EpochETA
from edgeclf.train.mixup import mixup
from edgeclf.train.progressive import ProgressiveResize, resize_layer
from edgeclf.train.schedules import WarmupCosine, warmup_steps_of

log = logging.getLogger(__name__)

#: Variables whose names contain one of these are not weight-decayed (BatchNorm, biases).
NO_DECAY = ("bn", "bias", "gamma", "beta")


@dataclass(frozen=True)
class FitPlan:
    """How to fit: optimizer, schedule, loss and batches.

    Attributes:
        optimizer: ``sgd`` (momentum 0.9, Nesterov) or ``adam`` (AdamW when ``weight_decay`` > 0).
        lr: peak learning rate; linear warm-up over ``warmup_fraction`` of the steps, then cosine
            decay to 0 (:class:`~edgeclf.train.schedules.WarmupCosine`).
        weight_decay: decoupled weight decay (Loshchilov & Hutter 2019), 0 = none; never applied to
            BatchNorm parameters or biases.
        label_smoothing: of the categorical cross-entropy (Szegedy et al. 2016).
        batch_size: images per step.
        warmup_fraction: in [0, 1).
        augment: training augmentation (None = none), applied in the tf.data pipeline.
        seed: shuffle/augmentation seed.
        teacher: knowledge distillation from this teacher (None = cross-entropy on the labels only);
            see :mod:`edgeclf.train.distill`.
        mixup_alpha: mix each training batch with its reverse, lam ~ Beta(alpha, alpha)
            (:mod:`edgeclf.train.mixup`); 0 = off. Not with ``teacher``.
        ema_decay: keep an exponential moving average of the trainable weights with this decay per
            step, validate with it and end with it (:mod:`edgeclf.train.ema`); 0 = off, else in (0, 1).
        progressive_size: progressive resizing (:mod:`edgeclf.train.progressive`): the first
            ``floor(progressive_fraction x epochs)`` epochs at this input size in pixels, the rest
            at the model's own; 0 = off. Needs a model with a ``resize`` layer.
        progressive_fraction: in (0, 1).
    """

    optimizer: Optimizer
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    warmup_fraction: float = 0.0
    augment: AugmentConfig | None = None
    seed: int = 0
    teacher: Teacher | None = None
    mixup_alpha: float = 0.0
    ema_decay: float = 0.0
    progressive_size: int = 0
    progressive_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.progressive_size < 0 or not 0 < self.progressive_fraction < 1:
            raise ValueError(f"need progressive_size >= 0 and progressive_fraction in (0, 1), got "
                             f"{self.progressive_size}, {self.progressive_fraction}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0, got {self.mixup_alpha}")
        if self.mixup_alpha and self.teacher is not None:
            raise ValueError("mixup with a teacher is not supported (the teacher's targets are not mixed)")

    def steps(self, n_images: int, epochs: int) -> int:
        """Optimizer steps of ``epochs`` epochs over ``n_images`` images."""
        return epochs * int(np.ceil(n_images / self.batch_size))


def make_optimizer(kind: Optimizer, schedule, weight_decay: float, ema_decay: float = 0.0):
    """A Keras optimizer: Nesterov SGD (momentum 0.9) or Adam/AdamW, BN/bias excluded from decay;
    with ``ema_decay`` > 0 it also keeps an EMA of the weights (tf_keras ``use_ema``)."""
    wd = weight_decay or None
    ema = {"use_ema": True, "ema_momentum": ema_decay} if ema_decay else {}
    if Optimizer(kind) is Optimizer.SGD:
        opt = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=wd, **ema)
    else:
        opt = (keras.optimizers.AdamW(schedule, weight_decay=wd, **ema) if wd
               else keras.optimizers.Adam(schedule, **ema))
    if wd:
        opt.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return opt


class SourceCheck(keras.callbacks.Callback):
    """Calls ``check()`` of the streamed image sources after every batch and epoch, so training stops
    with DataError as soon as too many files failed to decode (:mod:`edgeclf.data.stream`)."""

    def __init__(self, sources: Sequence):
        super().__init__()
        self.sources = list(sources)

    def on_train_batch_end(self, batch, logs=None):
        for s in self.sources:
            s.check()

    on_epoch_end = on_test_end = on_train_batch_end


class ExactStepCount(keras.callbacks.Callback):
    """Keeps ``optimizer.iterations`` equal to the optimizer steps actually taken.

    tf_keras counts one step too many in the first epoch over a dataset of unknown cardinality
    (the streamed image sources: their ``filter`` of undecodable files hides the length). Measured
    (tf_keras 2, 135 images, batch 32, SGD): ``iterations`` 6 after the first epoch instead of 5,
    5 per epoch afterwards, weights identical to the 5-step run, i.e. only the counter is off. The
    counter drives the learning-rate schedule and is saved by ``--resume`` checkpoints, so a streamed
    run would follow the schedule one step late, and a resumed one two. This sets it back at the end
    of every epoch to its value at the epoch's start plus the batches seen.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._batches = int(keras.backend.get_value(self.model.optimizer.iterations)), 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1

    def on_epoch_end(self, epoch, logs=None):
        taken = self._start + self._batches
        if int(keras.backend.get_value(self.model.optimizer.iterations)) != taken:
            self.model.optimizer.iterations.assign(taken)


def one_iterator(batches: tf.data.Dataset) -> tuple[tf.data.Dataset, int | None]:
    """``batches`` repeated, and its batches per epoch, so that ``Model.fit`` keeps ONE data iterator for all
    its epochs; ``(batches, None)`` where the number of batches is not known (a streamed source).

    Why: given a finite dataset, tf_keras makes a new iterator every epoch and deletes the last one, and
    deleting it stalled for 10-14 s with no CPU in use at 5 of 7 epoch boundaries (three probes) of the
    full-data ``cnn`` (main thread waiting in ``RootDataset::Iterator``'s destructor for one of its threads;
    ``benchmarks/epoch_overhead_probe.py``, benchmarks/results/cifar10-cnn-whiten/epoch-overhead/). The
    repeated dataset re-iterates (and so reshuffles, ``reshuffle_each_iteration``) its input at each pass,
    and every epoch still ends with the same partial batch, so the batches are those of one iterator per
    epoch.
    """
    n = int(batches.cardinality())
    if n <= 0:  # UNKNOWN (-2, e.g. after a filter), INFINITE (-1) or empty
        return batches, None
    return batches.repeat(), n


def without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds`` with tf.data's autotuning off (``options.autotune.enabled = False``: its ``AUTOTUNE`` parallel
    maps then keep their initial min(16, CPUs) calls at a time), for the validation pipeline, which ``Model.fit``
    iterates anew at every epoch (``evaluate`` makes a new iterator per call).

    Why: with autotuning on, deleting each epoch's validation iterator waited 1.73-1.75 s at 3 of 4 epochs
    of the full-data ``cnn`` (~0.1 CPU-seconds used in the wait; 0.23 s at the fourth); with it off 0.13-0.18
    s, for the same validation time (3.6-3.9 s vs 3.5-4.2 s for 5,000 images; ``benchmarks/
    epoch_overhead_probe.py --val-split 0.1 [--val-autotune on]``,
    benchmarks/results/cifar10-cnn-whiten/README.md). The waits ended 5.2 s after validation began, where
    the autotuner's doubling wait (10 ms ... 2.56 s) ends, which points at the autotuner thread: a race
    between its wake-up and the deletion's cancellation, the wait :func:`one_iterator` avoids for the
    training iterator by never deleting it.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def fit(model, train, num_classes: int, plan: FitPlan, epochs: int, callbacks: Sequence = (), validation=None,
        class_weight: dict[int, float] | None = None, initial_epoch: int = 0, budget: TimeBudget | None = None):
    """Compile ``model`` with ``plan`` and fit it for ``epochs`` epochs.

    Args:
        model: a Keras classifier, float32 (N, H, W, C) [0, 255] -> (N, num_classes) probabilities.
            Built under a ``tf.distribute`` strategy's scope, it is compiled and fitted under it
            (``model.distribute_strategy``); ``plan.batch_size`` is then the global batch.
        train: the training images, an image source (:mod:`edgeclf.data.dataset`): in memory
            (``ArraySplit(x uint8 (N, H, W, C), labels int (N,))``) or streamed
            (:class:`edgeclf.data.stream.FileSplit`).
        num_classes: C.
        plan: optimizer/schedule/loss/batch settings.
        epochs: epochs to train (the schedule spans exactly these epochs of ``len(train)`` images).
        callbacks: Keras callbacks (e.g. ``keras.callbacks.BackupAndRestore``, which makes ``fit``
            continue after the epoch it restores).
        validation: optional image source evaluated after every epoch.
        class_weight: optional per-class loss weights.
        initial_epoch: epoch index to start counting from (for history/logging).
        budget: a :class:`~edgeclf.train.budget.TimeBudget` that may shorten these epochs (and the
            schedule with them) to fit a wall-clock budget; it runs before ``callbacks`` at each
            epoch end. Only with ``initial_epoch`` 0. With ``plan.progressive_size`` it plans with
            each epoch's input size.

    Returns:
        keras.callbacks.History. The loss is the label-smoothed cross-entropy, or with
        ``plan.teacher`` the distillation loss; the ``accuracy`` metric is top-1 against the labels
        (with mixup: against the larger share of each mixed target). With ``plan.ema_decay`` the
        validation runs on the EMA weights and the model ends holding them.

    Raises:
        edgeclf.errors.DataError: a streamed source had too many undecodable files.
        edgeclf.errors.ConfigError: ``plan.progressive_size`` for a model without a ``resize`` layer.
        ValueError: ``budget`` with ``initial_epoch`` > 0.
    """
    steps = plan.steps(len(train), epochs)
    schedule = WarmupCosine(plan.lr, steps, warmup_steps_of(steps, plan.warmup_fraction))
    resize = None
    if plan.progressive_size:
        resize = ProgressiveResize(resize_layer(model), plan.progressive_size, plan.progressive_fraction,
                                   lambda: budget.epochs if budget is not None else epochs)
    if budget is not None:
        if initial_epoch:
            raise ValueError("a time budget needs initial_epoch 0")
        budget.bind(schedule, plan.steps(len(train), 1), epochs, plan.warmup_fraction,
                    size_of=resize.size_in if resize is not None else None)
    has_val = validation is not None and len(validation)
    if plan.teacher is None:
        def one_hot(a, b):
            return a, tf.one_hot(b, num_classes)

        train_ds = source_batches(train, plan.batch_size, True, plan.augment, plan.seed).map(one_hot)
        if plan.mixup_alpha:
            train_ds = mixup(train_ds, plan.mixup_alpha, plan.seed)
        val_ds = source_batches(validation, 256, False).map(one_hot) if has_val else None
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=plan.label_smoothing)
    else:
        t = plan.teacher
        train_ds, val_ds = distill_datasets(t, train, num_classes, plan.batch_size, plan.augment, plan.seed,
                                            validation if has_val else None, class_weight)
        class_weight = None  # applied as sample weights by distill_datasets
        loss = distillation_loss(num_classes, t.alpha, t.temperature, plan.label_smoothing)
    with model.distribute_strategy.scope():  # metrics and optimizer belong to the model's strategy
        metric = (keras.metrics.CategoricalAccuracy(name="accuracy") if plan.teacher is None
                  else label_accuracy(num_classes))
        model.compile(optimizer=make_optimizer(plan.optimizer, schedule, plan.weight_decay, plan.ema_decay),
                      loss=loss, metrics=[metric])
    checks = SourceCheck([train, validation] if has_val else [train])
    train_ds, steps_per_epoch = one_iterator(train_ds)
    val_ds = without_autotune(val_ds) if val_ds is not None else None
    try:
        return model.fit(train_ds, validation_data=val_ds, epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
                         steps_per_epoch=steps_per_epoch,
                         callbacks=[checks, ExactStepCount(), *([resize] if resize else []), EMAValidation(),
                                    *([budget] if budget else []), EpochETA(epochs, budget), *callbacks],
                         class_weight=class_weight,
                         verbose=1 if log.isEnabledFor(logging.INFO) else 2)
    finally:
        if resize is not None:  # also after Ctrl-C or an error: the model goes on at its own size
            resize.restore()

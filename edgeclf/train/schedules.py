"""Learning-rate schedules (serialisable, so checkpoints and model.keras reload)."""

from __future__ import annotations

import math

from edgeclf._keras import keras, tf


def warmup_steps_of(total_steps: int, warmup_fraction: float) -> int:
    """Warm-up steps of a ``total_steps`` schedule that warms up for ``warmup_fraction`` (in [0, 1)) of
    it: the one rule of the training loop and of ``--time-budget``'s shortened plans."""
    return int(warmup_fraction * total_steps)


@keras.utils.register_keras_serializable(package="edgeclf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``peak/10`` to ``peak`` over ``warmup_steps``, then cosine decay to 0.

    The one-cycle shape of Smith & Topin (2017), "Super-Convergence", with a cosine tail
    (Loshchilov & Hutter 2017, SGDR). Step-based: ``lr(step)``, float32 scalar.

    The step counts live in (non-trainable) variables, so :meth:`replan` can shorten a running
    schedule (``--time-budget``) without retracing the compiled train step.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        self.peak = float(peak)
        self._total = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="schedule_total_steps")
        self._warm = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="schedule_warmup_steps")
        self.replan(total_steps, warmup_steps)

    @property
    def total_steps(self) -> int:
        return int(self._total.numpy())

    @property
    def warmup_steps(self) -> int:
        return int(self._warm.numpy())

    def replan(self, total_steps: int, warmup_steps: int) -> None:
        """Set the schedule's length to ``total_steps`` (>= 1) with ``warmup_steps`` (>= 0) of warm-up;
        the decay then reaches 0 at the new ``total_steps``."""
        self._total.assign(float(max(1, int(total_steps))))
        self._warm.assign(float(max(0, int(warmup_steps))))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = tf.identity(self._warm)
        total = tf.identity(self._total)
        warm_lr = self.peak * (0.1 + 0.9 * step / tf.maximum(warm, 1.0))
        progress = tf.clip_by_value((step - warm) / tf.maximum(total - warm, 1.0), 0.0, 1.0)
        cos_lr = 0.5 * self.peak * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < warm, warm_lr, cos_lr)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}

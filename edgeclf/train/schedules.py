"""Learning-rate schedules (serialisable, so checkpoints and model.keras reload)."""

from __future__ import annotations

import math

from edgeclf._keras import keras, tf


@keras.utils.register_keras_serializable(package="edgeclf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``peak/10`` to ``peak`` over ``warmup_steps``, then cosine decay to 0.

    The one-cycle shape of Smith & Topin (2017), "Super-Convergence", with a cosine tail
    (Loshchilov & Hutter 2017, SGDR). Step-based: ``lr(step)``, float32 scalar.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        self.peak = float(peak)
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, int(warmup_steps))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = tf.cast(self.warmup_steps, tf.float32)
        total = tf.cast(self.total_steps, tf.float32)
        warm_lr = self.peak * (0.1 + 0.9 * step / tf.maximum(warm, 1.0))
        progress = tf.clip_by_value((step - warm) / tf.maximum(total - warm, 1.0), 0.0, 1.0)
        cos_lr = 0.5 * self.peak * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < warm, warm_lr, cos_lr)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}

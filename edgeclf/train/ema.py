"""Exponential moving average (EMA) of the weights during training, and evaluating with it.

The average itself is tf_keras' optimizer option ``use_ema`` (every optimizer step:
``average = decay * average + (1 - decay) * weight``, the average starting at the weights of the
optimizer's first step; at the end of ``fit`` the model's trainable weights are overwritten with
it, ``Optimizer.finalize_variable_values``). This module adds what tf_keras 2 lacks and Keras 3
has as ``keras.callbacks.SwapEMAWeights``: evaluating and checkpointing the averaged weights
during training, so the per-epoch validation top-1 and the best-epoch weights an early stop
restores are those of the model that will be saved.

Weight averaging: Polyak & Juditsky 1992; the EMA form as in TensorFlow's
``ExponentialMovingAverage`` and timm's ``ModelEmaV2`` (used by EfficientNet and the airbench
CIFAR-10 recipes).

Only trainable variables are averaged: BatchNorm moving statistics are not, which is exact for
models whose BatchNorm runs in inference mode while training (edgeclf's transfer fine-tuning,
``--train-bn`` included) and approximate otherwise.
"""

from __future__ import annotations

import contextlib

from edgeclf._keras import keras


def has_ema(model) -> bool:
    """True when ``model`` is compiled with an optimizer that keeps an EMA of its weights and has
    taken at least one step (before that there is no average to use)."""
    opt = getattr(model, "optimizer", None)
    return bool(getattr(opt, "use_ema", False)) and bool(getattr(opt, "_model_variables_moving_average", None))


def _swap(model) -> None:
    """Exchange the model's trainable weights with the optimizer's averages (an involution)."""
    opt = model.optimizer
    for var in model.trainable_variables:
        avg = opt._model_variables_moving_average[opt._index_dict[opt._var_key(var)]]
        current = var.read_value()
        var.assign(avg)
        avg.assign(current)


@contextlib.contextmanager
def ema_weights(model):
    """Inside the block, ``model`` holds its EMA weights (when it has any; else nothing changes);
    on leaving, its own weights and the averages are back in place, also after an exception."""
    if not has_ema(model):
        yield model
        return
    _swap(model)
    try:
        yield model
    finally:
        _swap(model)


class EMAValidation(keras.callbacks.Callback):
    """Runs ``fit``'s per-epoch validation on the EMA weights (as Keras 3's ``SwapEMAWeights``):
    swaps them in at ``on_test_begin`` and back at ``on_test_end``. A no-op without EMA."""

    def __init__(self):
        super().__init__()
        self._stack = contextlib.ExitStack()

    def on_test_begin(self, logs=None):
        self._stack.enter_context(ema_weights(self.model))

    def on_test_end(self, logs=None):
        self._stack.close()

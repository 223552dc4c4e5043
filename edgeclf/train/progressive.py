"""Progressive resizing: the first epochs of the last phase at a lower input size, the rest at the model's own.

A transfer model resizes its input to ``img_size`` inside the graph (the ``resize`` layer of
:func:`edgeclf.models.transfer.build`), and its convolutions and global pooling work at any size, so
training can run at a smaller size for a while: a ``mobilenet_v2`` fine-tune step at 128 px took 655 ms
against 940 ms at 160 px (batch 64, 2-vCPU Zen 4, ``benchmarks/train_step_probe.py``; 1.43x, where the
pixel count alone would give 1.56x). The last epochs run at ``img_size``, which is the size the model
is saved, exported and evaluated at: training at a lower size than the test size shifts the apparent
object size (Touvron et al. 2019, "Fixing the train-test resolution discrepancy"), and ending at the
test size removes that gap. Anchors: fastai's progressive resizing (Howard, DAWNBench 2018),
EfficientNetV2's progressive learning (Tan & Le 2021).

Which epochs are small: the first ``floor(fraction x n)`` of the phase's ``n`` planned epochs; when
``--time-budget`` shortens the phase (or lengthens it again), ``n`` and the switch move with it, but
once an epoch has run at the full size the later ones stay there. :class:`ProgressiveResize`
sets the ``resize`` layer before each epoch and retraces the train step when the size changes (tf_keras
reads the layer's size when it traces); :class:`edgeclf.train.budget.TimeBudget` plans with the cost
of each epoch's size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from edgeclf._keras import keras
from edgeclf.errors import ConfigError

log = logging.getLogger(__name__)


def low_res_epochs(epochs: int, fraction: float) -> int:
    """How many of a phase's ``epochs`` epochs run at the low size: ``floor(fraction x epochs)``."""
    return math.floor(fraction * epochs)


def epoch_size(epoch: int, epochs: int, low: int, full: int, fraction: float) -> int:
    """The input size (pixels per side) of ``epoch`` (0-based) in a phase of ``epochs`` epochs."""
    return low if epoch < low_res_epochs(epochs, fraction) else full


def resize_layer(model):
    """The model's ``resize`` layer (a square ``Resizing``).

    Raises:
        ConfigError: no ``resize`` layer (the input size equals the model's ``img_size``), or a
            non-square one.
    """
    try:
        layer = model.get_layer("resize")
    except ValueError:
        raise ConfigError(f"progressive resizing needs a model that resizes its input: '{model.name}' has no "
                          "resize layer (its input size equals its --img-size)") from None
    if layer.height != layer.width:
        raise ConfigError(f"progressive resizing needs a square resize layer, got {layer.height}x{layer.width}")
    return layer


class ProgressiveResize(keras.callbacks.Callback):
    """Runs the first epochs of one ``fit`` at ``low`` px and the rest at the model's own size.

    Args:
        layer: the model's ``resize`` layer (:func:`resize_layer`); its size when given is the model's
            ``img_size``, the size of the last epochs (``full``).
        low: input size in pixels per side of the first epochs, 0 < ``low`` < ``full``.
        fraction: in (0, 1): the first ``floor(fraction x planned())`` epochs are at ``low``.
        planned: the current number of epochs of this ``fit`` (a time budget may lower it).

    The ``resize`` layer sits in front of one nested base. The size is back at ``full`` when training
    ends, also after an exception (call :meth:`restore`; ``edgeclf.train.fit.fit`` does).
    """

    def __init__(self, layer, low: int, fraction: float, planned: Callable[[], int]):
        super().__init__()
        full = int(layer.height)
        if not 0 < low < full or not 0 < fraction < 1:
            raise ValueError(f"need 0 < low < full and 0 < fraction < 1, got {low}, {full}, {fraction}")
        self.low, self.full, self.fraction, self.planned = int(low), full, float(fraction), planned
        self._layer = layer
        self._bases: list = []
        self._full_from: int | None = None  # the first epoch run at full size: the later ones stay there

    def size_of(self, epoch: int) -> int:
        """The input size of ``epoch`` (0-based) under the current plan."""
        return self.size_in(epoch, self.planned())

    def size_in(self, epoch: int, epochs: int) -> int:
        """The input size of ``epoch`` (0-based) when the phase has ``epochs`` epochs; ``full`` for any
        epoch after one that ran at ``full`` (a plan lengthened by the time budget moves the switch later,
        but never back to ``low``)."""
        if self._full_from is not None and epoch >= self._full_from:
            return self.full
        return epoch_size(epoch, epochs, self.low, self.full, self.fraction)

    def on_train_begin(self, logs=None):
        # a keras.applications base checks its input shape against the size it was built for
        self._bases = [layer for layer in self.model.layers if isinstance(layer, keras.Model)]
        for base in self._bases:
            base.input_spec = None

    def on_epoch_begin(self, epoch, logs=None):
        size = self.size_of(epoch)
        if size == self.full and self._full_from is None:
            self._full_from = epoch
        self._set(size)

    def on_train_end(self, logs=None):
        self.restore()

    def restore(self) -> None:
        """Back to ``full`` px and the bases' own input checks (idempotent)."""
        self._set(self.full)
        for base in self._bases:
            if hasattr(base, "_manual_input_spec"):
                del base._manual_input_spec
        self._bases = []

    def _set(self, size: int) -> None:
        layer = self._layer
        if (layer.height, layer.width) == (size, size):
            return
        layer.height = layer.width = size
        # the traced steps hold the old size: trace the train step again, the others when next used
        self.model.train_function = self.model.make_train_function(force=True)
        self.model.test_function = self.model.predict_function = None
        log.info("progressive resizing: training at %d px", size)

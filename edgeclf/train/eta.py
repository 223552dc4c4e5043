"""One log line after each epoch of ``fit``: how long it took and when the phase will end.

Keras' progress bar covers one epoch, and its ``Epoch k/N`` keeps the N that ``fit`` was given even
after ``--time-budget`` has re-planned the phase to fewer epochs (or grown it back), so on a 2-hour
run a user could not tell from it when training ends. This line gives the planned epochs as they
stand, the epoch's time and the phase's remaining time, e.g.::

    epoch 3/10: 651 s (loss 0.5321, top-1 0.8354); 7 more, about 1 h 16 min (ends about 15:05 UTC)

After the first epoch, which the time budget does not plan from (graph tracing), a plan that would
overrun the budget is reported as such, with the budget's end, not the plan's::

    epoch 1/90: 2 min (loss 1.8939, top-1 0.4114); 89 more would take about 3 h 21 min, past the 30 min
    time budget, which shortens the plan from the second epoch on (ends by about 07:40 UTC)

The remaining time comes from the time budget's own estimate when there is one (per input size with
progressive resizing, :meth:`edgeclf.train.budget.TimeBudget.epoch_estimate`), otherwise from the mean
epoch time, leaving out the first epoch (graph tracing) once there is another; like Ultralytics'
per-epoch time estimate, it is a projection of the epochs measured so far, not a promise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edgeclf._keras import keras
from edgeclf.train.budget import TimeBudget

log = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """``seconds`` (>= 0) as ``"42 s"``, ``"7 min"`` or ``"1 h 16 min"`` (minutes rounded)."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(round(seconds / 60))
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


class EpochETA(keras.callbacks.Callback):
    """Logs each epoch's time, loss and top-1 and the time left in the phase (INFO, logger ``edgeclf.train.eta``).

    Args:
        epochs: the epochs ``fit`` runs, used as the plan when there is no ``budget``.
        budget: the phase's :class:`~edgeclf.train.budget.TimeBudget`, whose current plan (``epochs``)
            and per-size epoch estimate are used; it must run before this callback in ``fit``'s list.
        clock: monotonic seconds (the budget's clock when there is a budget, so tests can fake both).
        wall: seconds since the epoch (``time.time``), for the end time printed in UTC.
    """

    def __init__(self, epochs: int, budget: TimeBudget | None = None, clock: Callable[[], float] | None = None,
                 wall: Callable[[], float] = time.time):
        super().__init__()
        self.epochs, self.budget, self.wall = int(epochs), budget, wall
        self.clock = clock or (budget.clock if budget is not None else time.perf_counter)
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self.clock()

    def seconds_left(self, done: int, planned: int) -> float:
        """Estimated seconds of epochs ``done`` .. ``planned`` - 1 (0-based), from the epochs measured."""
        if self.budget is not None:
            return sum(self.budget.epoch_estimate(self.budget.size_of(e, planned)) for e in range(done, planned))
        steady = self.seconds[1:] or self.seconds
        return (planned - done) * sum(steady) / len(steady)

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(self.clock() - self._start)
        done = epoch + 1
        planned = max(self.budget.epochs if self.budget is not None else self.epochs, done)
        logs = logs or {}
        shown = ", ".join(f"{name} {logs[key]:.4f}" for key, name in (("loss", "loss"), ("accuracy", "top-1"),
                                                                        ("val_loss", "val loss"),
                                                                        ("val_accuracy", "val top-1"))
                          if key in logs)
        line = f"epoch {done}/{planned}: {format_duration(self.seconds[-1])}" + (f" ({shown})" if shown else "")
        if done < planned:
            left = self.seconds_left(done, planned)
            deadline = self.budget.seconds_left() if self.budget is not None else left
            ends = time.strftime("%H:%M UTC", time.gmtime(self.wall() + max(min(left, deadline), 0.0)))
            if left > deadline:  # after the first epoch, which the budget does not plan from
                line += (f"; {planned - done} more would take about {format_duration(left)}, past the "
                         f"{format_duration(self.budget.budget)} time budget, which shortens the plan from the "
                         f"second epoch on (ends by about {ends})")
            else:
                line += f"; {planned - done} more, about {format_duration(left)} (ends about {ends})"
        log.info("%s", line)

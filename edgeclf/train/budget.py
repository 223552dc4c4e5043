"""``--time-budget``: fit a training run into a wall-clock budget by planning fewer epochs.

The same recipe takes different times on different machines (the ``cnn``'s 45 bf16 epochs: 6,716 s
on a 2-vCPU Xeon with AMX, 7,626 s on a 2-vCPU EPYC Zen 4; README). Cutting a run off at a deadline
would leave the learning rate high and the model un-annealed, so the budget instead re-plans the
last phase after each of its epochs: from the mean epoch time measured so far (the first epoch,
which includes graph tracing, only until a second one is measured; per input size with progressive
resizing, which traces the step again at each new size) it works out how many epochs
still fit, and if that is fewer than planned it shortens the warm-up + cosine schedule
(:meth:`edgeclf.train.schedules.WarmupCosine.replan`) so the decay still reaches 0 at the new last
epoch. The first epoch alone shortens the plan only when not even a second epoch fits at its pace:
otherwise the plan waits for the second epoch's time. Measured why (session 20, 2-vCPU Zen 5):
``mobilenet_v2``'s first fine-tune epoch took 624 s (graph tracing, and a test run beside it), the
second 549 s; planning from the first cut 14 planned epochs to 10 for good, where the second allowed
11. A shortened plan grows back (never beyond the phase's epochs as given, the recipe's upper bound)
when later epochs measure faster and the extra epochs fit with half an epoch to spare, but only from
measured times: every input size the remaining epochs would use must have been measured. Ultralytics'
``time=`` argument is the anchor (it overrides the epochs from the first epoch's time and rebuilds its
scheduler); unlike it, edgeclf never adds epochs beyond the recipe's. A resumed run starts from its
checkpointed plan (``planned``) and can grow it back to the phase's epochs in the same way.

With progressive resizing (:mod:`edgeclf.train.progressive`) the epochs of a phase differ in size:
the budget then estimates each size's epoch time from the epochs measured at that size, and a size
not measured yet from another one, scaled by the ratio of pixel counts. Measured, the ratio is an
upper bound of the cost ratio (``mobilenet_v2`` fine-tune steps: 1.43x faster at 128 px than at
160 px for 1.56x fewer pixels, 2-vCPU Zen 4), so large epochs estimated from small ones come out
longer than they are, and the plan errs on the side of ending early; once the large size is measured,
the plan grows back to what fits. Measured why (session 26, 2-vCPU Zen 4, ``mobilenet_v2 --time-budget
1.9 --progressive-size 128``): after two 128 px epochs (447 s, 473 s) the 160 px epochs were estimated
at 739 s and the 14 planned epochs were cut to 10; they took 649-679 s, where 11 would have fit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edgeclf._keras import keras
from edgeclf.train.schedules import WarmupCosine, warmup_steps_of

log = logging.getLogger(__name__)


class TimeBudget(keras.callbacks.Callback):
    """Re-plans the epochs of one ``fit`` so the whole run ends within ``budget_seconds``.

    Args:
        budget_seconds: wall-clock budget of the whole training run, in seconds (> 0).
        seconds_before: training seconds already spent (earlier phases, earlier sessions of a resumed run).
        on_replan: called with the new number of epochs of this phase whenever it changes (the
            training loop records it in the run checkpoint, so ``--resume`` keeps the plan).
        planned: the plan to start from when it is shorter than the epochs :meth:`bind` is given (a
            resumed run's checkpointed plan; ``fit`` then runs up to the phase's epochs, so the plan can
            grow back to them). None: the epochs given to :meth:`bind`.
        clock: monotonic seconds (``time.perf_counter``; tests pass a fake clock).

    Use :meth:`bind` before ``fit`` (``edgeclf.train.fit.fit`` does it when given ``budget=``).
    """

    def __init__(self, budget_seconds: float, seconds_before: float = 0.0,
                 on_replan: Callable[[int], None] | None = None, clock: Callable[[], float] = time.perf_counter,
                 planned: int | None = None):
        super().__init__()
        if budget_seconds <= 0:
            raise ValueError(f"budget_seconds must be > 0, got {budget_seconds}")
        self.budget, self.before = float(budget_seconds), float(seconds_before)
        self.on_replan, self.clock, self.planned = on_replan, clock, planned
        self.schedule: WarmupCosine | None = None
        self.epochs = self.max_epochs = self.steps_per_epoch = 0
        self.warmup_fraction = 0.0
        self.epoch_seconds: list[float] = []
        self.epoch_sizes: list[int] = []
        self.size_of: Callable[[int, int], int] = lambda epoch, epochs: 0

    def bind(self, schedule: WarmupCosine, steps_per_epoch: int, epochs: int, warmup_fraction: float,
             size_of: Callable[[int, int], int] | None = None) -> None:
        """The schedule of this ``fit`` (``epochs`` epochs of ``steps_per_epoch`` steps) to shorten.

        ``size_of(epoch, epochs)``: the input size in pixels per side of ``epoch`` (0-based) when the
        phase has ``epochs`` epochs, for progressive resizing; None = every epoch the same size. With a
        shorter ``planned`` plan (a resumed run) the schedule is re-planned to it at once."""
        self.schedule, self.steps_per_epoch, self.max_epochs = schedule, int(steps_per_epoch), int(epochs)
        self.epochs = min(self.planned or self.max_epochs, self.max_epochs)
        self.warmup_fraction = float(warmup_fraction)
        if size_of is not None:
            self.size_of = size_of
        if self.epochs < self.max_epochs:
            total = self.epochs * self.steps_per_epoch
            schedule.replan(total, warmup_steps_of(total, self.warmup_fraction))

    def on_train_begin(self, logs=None):
        self._start = self.clock()
        self._epoch_start: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        # An epoch costs the time from the previous epoch's end (where on_epoch_end starts the next one),
        # not from its own begin: what runs in between (the other callbacks' end-of-epoch saves, Keras
        # making the next data iterator) uses the budget as well. Measured: a 2 h `cnn --stem whiten` run
        # spent 7,175 s in training for 5,843 s of Keras epoch times (Zen 4,
        # benchmarks/results/cifar10-cnn-whiten); planned from begin-to-end times (103 s where ~126 s
        # passed per epoch) the budget cut its plan ten times, 67 -> 57 epochs.
        if self._epoch_start is None:  # the first epoch of this fit
            self._epoch_start = self.clock()

    def epoch_estimate(self, size: int | None = None) -> float:
        """Seconds per epoch (at input ``size``; None: the last epoch's size): the mean of the epochs
        measured at that size, the first at each size (graph tracing: the train step is traced again
        when the size changes) left out once there is another; a size not measured yet is estimated
        from the measured ones times the ratio of pixel counts."""
        if size is None:
            size = self.epoch_sizes[-1]
        steady: list[tuple[int, float]] = []
        for each in dict.fromkeys(self.epoch_sizes):
            times = [t for s, t in zip(self.epoch_sizes, self.epoch_seconds) if s == each]
            steady += [(each, t) for t in (times[1:] or times)]
        same = [t for s, t in steady if s == size]
        if same:
            return sum(same) / len(same)
        # a size not measured yet: only with progressive resizing, whose sizes are > 0
        return sum(t * (size / s) ** 2 for s, t in steady) / len(steady)

    def seconds_left(self) -> float:
        """Seconds of the budget left now (negative once it is spent); only after :meth:`bind`."""
        return self.budget - self.before - (self.clock() - self._start)

    def epochs_that_fit(self, done: int) -> int:
        """Epochs this phase can have in all, ``done`` of them finished: ``done`` + as many more as fit in
        the time left at :meth:`epoch_estimate` of each one's size (never fewer than ``done``). At most
        the current plan, or, where more than planned would fit, up to the phase's epochs as bound
        (``max_epochs``) if every size those epochs use has been measured and they fit with half an epoch
        of the time left to spare (so that one epoch's jitter does not lengthen and shorten the schedule
        in turn)."""
        left = self.seconds_left()
        measured, spare = set(self.epoch_sizes), 0.5 * self.epoch_estimate()
        for n in range(self.max_epochs, done, -1):
            sizes = [self.size_of(e, n) for e in range(done, n)]
            need = sum(self.epoch_estimate(size) for size in sizes)
            if n > self.epochs and (not measured.issuperset(sizes) or need + spare > left):
                continue  # growing the plan: measured sizes only, with half an epoch to spare
            if need <= left:
                return n
        return done

    def on_epoch_end(self, epoch, logs=None):
        if self.schedule is None:
            raise RuntimeError("TimeBudget.bind() was not called before fit")
        now = self.clock()
        self.epoch_seconds.append(now - self._epoch_start)
        self._epoch_start = now  # the next epoch starts here
        self.epoch_sizes.append(self.size_of(epoch, self.epochs))
        done = epoch + 1
        fit_in = self.epochs_that_fit(done)
        if len(self.epoch_seconds) == 1 and done < fit_in < self.epochs:
            # the first epoch of this fit (tracing, one-off slowdowns) shortens the plan only if no second
            # epoch fits; it may lengthen a resumed run's plan (its time, tracing included, errs long)
            fit_in = self.epochs
        if fit_in != self.epochs:
            if fit_in < self.epochs:
                log.info("time budget %g h: epochs take %.0f s here, so this phase runs %d of its %d epochs "
                         "(learning-rate schedule shortened to end at epoch %d)", self.budget / 3600,
                         self.epoch_estimate(), fit_in, self.epochs, fit_in)
            else:
                log.info("time budget %g h: epochs take %.0f s here, so this phase can run %d epochs again "
                         "instead of %d (learning-rate schedule lengthened to end at epoch %d)",
                         self.budget / 3600, self.epoch_estimate(), fit_in, self.epochs, fit_in)
            self.epochs = fit_in
            total = fit_in * self.steps_per_epoch
            self.schedule.replan(total, warmup_steps_of(total, self.warmup_fraction))
            if self.on_replan is not None:
                self.on_replan(fit_in)
        if done >= self.epochs:
            self.model.stop_training = True

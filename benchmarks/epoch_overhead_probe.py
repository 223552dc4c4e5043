"""Where a training epoch's wall time goes outside Keras' own epoch time: timestamps of the callback hooks
around the epoch boundaries of a real ``edgeclf train`` run.

Usage: python benchmarks/epoch_overhead_probe.py DATA [--epochs 3] [--stem conv|whiten] [--val-split F]
                                                       [--val-autotune on|off] [--out DIR] [--py-spy EXE]

Prints ``STAMP <seconds since start> <hook>`` lines (train begin, each epoch's begin and end, the first two
and last two batches of each epoch) and, at the end, the gaps between one epoch's end and the next one's
begin, which neither Keras' progress bar nor ``--time-budget``'s per-epoch estimate counts (the budget's
``left`` does: it reads the wall clock). Measured why: the 2 h ``cnn --stem whiten`` run of
``benchmarks/results/cifar10-cnn-whiten`` spent 7,175 s in training for 5,843 s of Keras epoch times.

Also printed: Python garbage collections over 0.1 s (``gc.callbacks``), the CPU seconds of each thread
of the process while it is between two epochs (``THREADS`` lines, from ``/proc/self/task``), and with
``--py-spy`` the native stacks taken every ~3 s inside each gap (files in ``--out``). What it found
(10-14 s gaps: deleting Keras' per-epoch data iterator) and the fix (``edgeclf.train.fit.one_iterator``):
``benchmarks/results/cifar10-cnn-whiten/README.md``.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import threading
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from edgeclf._keras import keras  # noqa: E402
from edgeclf.data import DataConfig  # noqa: E402
from edgeclf.models import ModelConfig  # noqa: E402
from edgeclf.train import train  # noqa: E402
from edgeclf.train.config import TrainConfig  # noqa: E402

T0 = time.perf_counter()


class Stamps(keras.callbacks.Callback):
    """Prints a timestamp at every hook around the epoch boundaries; keeps (end, begin) pairs."""

    def __init__(self, py_spy: str | None = None, out: str = "."):
        super().__init__()
        self.ends, self.begins = [], []
        self.val_ends, self.val_gaps = [], []
        self._last: list[tuple[int, float]] = []  # a streamed epoch's last two batch ends (batch, time)
        self.py_spy, self.out, self._in_gap = py_spy, out, threading.Event()

    def _open_gap(self, tag: str) -> None:
        """Start watching a gap (thread CPU, py-spy dumps) until :meth:`_close_gap`; files and lines carry ``tag``."""
        self._in_gap = gap = threading.Event()
        gap.set()
        threading.Thread(target=self._thread_cpu_in_gap, args=(tag, gap), daemon=True).start()
        if self.py_spy:
            threading.Thread(target=self._dump_gap, args=(tag, gap), daemon=True).start()

    def _close_gap(self) -> None:
        self._in_gap.clear()

    def _thread_cpu_in_gap(self, tag: str, gap: threading.Event) -> None:
        """CPU seconds each of this process's threads used while it is between two epochs, from
        ``/proc/self/task/*/stat`` (utime + stime, clock ticks), printed at the next epoch's begin."""
        def sample() -> dict[str, float]:
            out = {}
            for tid in os.listdir("/proc/self/task"):
                try:
                    with open(f"/proc/self/task/{tid}/stat") as f:
                        stat = f.read()
                except OSError:  # the thread ended
                    continue
                name = stat[stat.index("(") + 1:stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2:].split()
                out[f"{tid} {name}"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            return out
        start, t0 = sample(), time.perf_counter()
        while gap.is_set():
            time.sleep(0.05)
        end, dt = sample(), time.perf_counter() - t0
        used = sorted(((end[k] - start.get(k, 0.0), k) for k in end), reverse=True)
        print(f"THREADS gap {tag} ({dt:.2f} s wall): " + ", ".join(
            f"{k} {u:.2f} s" for u, k in used[:8] if u > 0), flush=True)
        gone = [k for k in start if k not in end]
        if gone:
            print(f"THREADS ended in the gap: {len(gone)} ({', '.join(gone[:8])})", flush=True)

    def _dump_gap(self, tag: str, gap: threading.Event) -> None:
        """``py-spy dump --native`` of this process while it is between two epochs: one every ~3 s (a dump takes
        ~2 s of a 2-vCPU machine, then a 1 s pause)."""
        time.sleep(0.5)
        n = 0
        while gap.is_set():
            t = time.perf_counter() - T0
            dump = subprocess.run([self.py_spy, "dump", "--native", "--pid", str(os.getpid())],
                                  capture_output=True, text=True).stdout
            if not gap.is_set():
                break
            with open(os.path.join(self.out, f"gap_{tag}_dump{n}.txt"), "w") as f:
                f.write(f"# {t:.2f} s\n{dump}")
            n += 1
            time.sleep(1.0)

    def _stamp(self, what: str) -> float:
        t = time.perf_counter() - T0
        print(f"STAMP {t:9.2f} {what}", flush=True)
        return t

    def on_train_begin(self, logs=None):
        self._stamp("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self._close_gap()
        self.begins.append(self._stamp(f"epoch_begin {epoch}"))

    def on_train_batch_end(self, batch, logs=None):
        steps = self.params.get("steps")
        if steps is None:  # a streamed source (unknown batch count): the last two are printed at the epoch's end
            self._last = [*self._last[-1:], (batch, time.perf_counter() - T0)]
        if batch < 2 or (steps is not None and batch >= steps - 2):
            self._stamp(f"batch_end {batch}")

    def on_test_begin(self, logs=None):
        self._stamp("validation_begin")

    def on_test_end(self, logs=None):
        """Keras' ``evaluate`` deletes its validation iterator when it returns, after this hook and before
        ``on_epoch_end``: that span is watched as gap ``val<epoch>``."""
        self.val_ends.append(self._stamp("validation_end"))
        self._open_gap(f"val{len(self.val_ends) - 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._close_gap()
        for batch, t in self._last:
            print(f"STAMP {t:9.2f} batch_end {batch}", flush=True)
        self._last = []
        self.ends.append(self._stamp(f"epoch_end {epoch}"))
        if len(self.val_ends) == len(self.ends):
            self.val_gaps.append(self.ends[-1] - self.val_ends[-1])
        self._open_gap(f"epoch{epoch}")


def _log_gc(phase: str, info: dict, _start=[0.0]) -> None:  # noqa: B006 (a per-process start time)
    """Prints Python garbage collections that took over 0.1 s (``gc.callbacks``)."""
    if phase == "start":
        _start[0] = time.perf_counter()
    elif (d := time.perf_counter() - _start[0]) > 0.1:
        print(f"STAMP {time.perf_counter() - T0:9.2f} gc generation {info['generation']} took {d:.2f} s, "
              f"collected {info['collected']}", flush=True)


def _validation_with_autotune() -> None:
    """Make ``edgeclf.train.fit`` leave tf.data's autotuning on for its validation pipeline (undo
    ``without_autotune``); the training pipeline is unchanged."""
    import edgeclf.train.fit as fit_module

    fit_module.without_autotune = lambda ds: ds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--stem", default="conv", choices=("conv", "whiten"))
    p.add_argument("--val-split", type=float, default=0.0,
                   help="hold out this fraction for validation after every epoch (Keras makes a new validation "
                   "iterator each time; the stamps show validation's begin and end)")
    p.add_argument("--val-autotune", default="off", choices=("on", "off"),
                   help="on: the validation pipeline runs with tf.data's autotuning, as Keras' default and "
                   "edgeclf before session 33 (whose iterator's deletion waited ~1.7 s per epoch); off: as "
                   "edgeclf.train.fit.without_autotune builds it")
    p.add_argument("--out", default="/tmp/epoch-overhead-probe")
    p.add_argument("--py-spy", help="path of a py-spy executable: dump this process's native stacks every "
                   "~3 s between epochs into --out")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    gc.callbacks.append(_log_gc)
    if a.val_autotune == "on":
        _validation_with_autotune()
    cfg = TrainConfig.from_recipe(ModelConfig(name="cnn", stem=a.stem), {},
                                  data=DataConfig(source=a.data, val_split=a.val_split, seed=42), epochs=a.epochs,
                                  mixed_precision=True, name="probe", out=a.out)
    stamps = Stamps(a.py_spy, a.out)
    result = train(cfg, progress=False, extra_callbacks=[stamps])
    gaps = [b - e for e, b in zip(stamps.ends, stamps.begins[1:])]
    print("gaps between epochs (s):", " ".join(f"{g:.2f}" for g in gaps))
    if stamps.val_gaps:
        print("gaps from validation's end to the epoch's end (s):", " ".join(f"{g:.2f}" for g in stamps.val_gaps))
    print("model directory:", result.model_dir)


if __name__ == "__main__":
    main()

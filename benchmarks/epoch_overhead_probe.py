"""Where a training epoch's wall time goes outside Keras' own epoch time: timestamps of the callback hooks
around the epoch boundaries of a real ``edgeclf train`` run.

Usage: python benchmarks/epoch_overhead_probe.py DATA [--epochs 3] [--stem conv|whiten] [--out DIR]

Prints ``STAMP <seconds since start> <hook>`` lines (train begin, each epoch's begin and end, the first two
and last two batches of each epoch) and, at the end, the gaps between one epoch's end and the next one's
begin, which neither Keras' progress bar nor ``--time-budget``'s per-epoch estimate counts (the budget's
``left`` does: it reads the wall clock). Measured why: the 2 h ``cnn --stem whiten`` run of
``benchmarks/results/cifar10-cnn-whiten`` spent 7,175 s in training for 5,843 s of Keras epoch times.
"""

from __future__ import annotations

import argparse
import os
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

    def __init__(self):
        super().__init__()
        self.ends, self.begins = [], []

    def _stamp(self, what: str) -> float:
        t = time.perf_counter() - T0
        print(f"STAMP {t:9.2f} {what}", flush=True)
        return t

    def on_train_begin(self, logs=None):
        self._stamp("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.begins.append(self._stamp(f"epoch_begin {epoch}"))

    def on_train_batch_end(self, batch, logs=None):
        steps = self.params.get("steps") or 0
        if batch < 2 or batch >= steps - 2:
            self._stamp(f"batch_end {batch}")

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(self._stamp(f"epoch_end {epoch}"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--stem", default="conv", choices=("conv", "whiten"))
    p.add_argument("--out", default="/tmp/epoch-overhead-probe")
    a = p.parse_args()
    cfg = TrainConfig.from_recipe(ModelConfig(name="cnn", stem=a.stem), {},
                                  data=DataConfig(source=a.data, val_split=0.0, seed=42), epochs=a.epochs,
                                  mixed_precision=True, name="probe", out=a.out)
    stamps = Stamps()
    result = train(cfg, progress=False, extra_callbacks=[stamps])
    gaps = [b - e for e, b in zip(stamps.ends, stamps.begins[1:])]
    print("gaps between epochs (s):", " ".join(f"{g:.2f}" for g in gaps))
    print("model directory:", result.model_dir)


if __name__ == "__main__":
    main()

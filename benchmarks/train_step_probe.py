"""Training-step throughput of one recipe configuration: images/s and how many of the CPU's cores the
step keeps busy, for profiling before changing a recipe (XLA ``jit_compile``, TensorFlow's thread
pools, batch size, frozen layers).

    python benchmarks/train_step_probe.py --data ../shared/datasets/cifar10-jpg [--model mobilenet_v2]
        [--img-size 160] [--batch-size 64] [--fine-tune-layers -1] [--jit-compile]
        [--inter-op N] [--intra-op N] [--steps 60] [--warmup 15] [--limit 4000]

Builds the model as ``edgeclf train`` does (``--weights none``: the speed does not depend on the
weights), puts it in the fine-tune phase of the two-phase recipe (``make_base_trainable`` with
``--train-bn``), compiles it with the recipe's optimizer and label-smoothed loss as
``edgeclf.train.fit.fit`` does (but at the constant fine-tune learning rate and without the accuracy
metric, so that ``--jit-compile`` can be passed to ``compile``), and trains on the
real augmented input pipeline (``source_batches``) of ``--limit`` training images. The first
``--warmup`` steps (tracing, oneDNN primitive creation) are not timed. Prints one line: the
configuration, the median and p90 step time (ms), images/s from the median, and the process CPU
time over wall time during the timed steps (2.0 = both cores of a 2-vCPU machine busy). Run one
configuration per process, with nothing else running. Writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from edgeclf._keras import keras, tf  # noqa: E402
from edgeclf.data import AugmentConfig, DataConfig, load_dataset  # noqa: E402
from edgeclf.data.pipeline import source_batches  # noqa: E402
from edgeclf.models import build_model, get_spec  # noqa: E402
from edgeclf.models.config import ModelConfig  # noqa: E402
from edgeclf.train.fit import make_optimizer  # noqa: E402


class _StepClock(keras.callbacks.Callback):
    """Wall and process-CPU time at every batch end."""

    def __init__(self) -> None:
        super().__init__()
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--img-size", type=int, default=None, help="default: the model's")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--fine-tune-layers", type=int, default=-1)
    ap.add_argument("--jit-compile", action="store_true", help="XLA-compile the train step")
    ap.add_argument("--inter-op", type=int, default=0, help="TF inter-op threads (0 = TF's default)")
    ap.add_argument("--intra-op", type=int, default=0, help="TF intra-op threads (0 = TF's default)")
    ap.add_argument("--steps", type=int, default=60, help="timed steps")
    ap.add_argument("--warmup", type=int, default=15, help="untimed steps first")
    ap.add_argument("--limit", type=int, default=4000, help="training images loaded")
    ap.add_argument("--trace", metavar="DIR", default=None,
                    help="after the timed steps, trace --trace-steps more with TensorFlow's profiler into DIR "
                         "and print the CPU time of each op type and the costliest ops")
    ap.add_argument("--trace-steps", type=int, default=5)
    args = ap.parse_args()
    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    if args.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)

    spec = get_spec(args.model)
    recipe = spec.recipe
    batch = args.batch_size or int(recipe["batch_size"])
    ds = load_dataset(DataConfig(source=args.data, val_split=0.0, limit=args.limit), progress=False)
    mcfg = ModelConfig(name=args.model, weights="none", **({"img_size": args.img_size} if args.img_size else {}))
    model = build_model(mcfg, ds.input_shape, ds.num_classes)
    if spec.two_phase:
        spec.make_base_trainable(model, args.fine_tune_layers, bool(recipe.get("train_bn", False)))
    model.compile(optimizer=make_optimizer(recipe["optimizer"], float(recipe.get("fine_tune_lr", recipe["lr"])),
                                           float(recipe["weight_decay"])),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=float(recipe["label_smoothing"])),
                  jit_compile=args.jit_compile)

    def one_hot(a, b):
        return a, tf.one_hot(b, ds.num_classes)

    train = source_batches(ds.train, batch, True, AugmentConfig(), 0).map(one_hot).repeat()
    clock = _StepClock()
    model.fit(train, epochs=1, steps_per_epoch=args.warmup + args.steps, callbacks=[clock], verbose=0)
    wall, cpu = np.asarray(clock.wall[args.warmup - 1:]), np.asarray(clock.cpu[args.warmup - 1:])
    dt = np.diff(wall) * 1000.0
    med = float(np.median(dt))
    busy = (cpu[-1] - cpu[0]) / (wall[-1] - wall[0])
    print(f"{args.model} {mcfg.img_size}px batch {batch} fine_tune_layers {args.fine_tune_layers} "
          f"jit_compile {args.jit_compile} inter_op {args.inter_op or 'default'} "
          f"intra_op {args.intra_op or 'default'}: step p50 {med:.0f} ms, p90 {np.percentile(dt, 90):.0f} ms, "
          f"{batch / med * 1000.0:.1f} img/s, CPU busy {busy:.2f} cores", flush=True)
    if args.trace:
        tf.profiler.experimental.start(args.trace)
        model.fit(train, epochs=1, steps_per_epoch=args.trace_steps, verbose=0)
        tf.profiler.experimental.stop()
        _print_op_times(args.trace, args.trace_steps)


def _print_op_times(logdir: str, steps: int, top: int = 25) -> None:
    """Sum the CPU time of every TensorFlow op event (``layer/name:OpType``) in the profiler's
    ``*.xplane.pb`` under ``logdir`` (all threads, so the total can exceed wall time on 2 cores) and
    print it per op type and for the ``top`` costliest ops, in ms per training step."""
    import collections
    import glob

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    by_type: collections.Counter = collections.Counter()
    by_op: collections.Counter = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for ev in line.events:
                name = names.get(ev.metadata_id, "")
                if ":" not in name or "::" in name:
                    continue
                op, kind = name.rsplit(":", 1)
                if not kind.lstrip("_")[:1].isupper() or " " in kind:
                    continue
                ms = ev.duration_ps / 1e9 / steps
                by_type[kind] += ms
                by_op[name] += ms
    total = sum(by_type.values())
    print(f"op CPU time per step: {total:.0f} ms (all threads; {path})")
    for kind, ms in by_type.most_common():
        if ms >= 0.005 * total:
            print(f"  {ms:8.1f} ms  {100 * ms / total:5.1f} %  {kind}")
    print(f"costliest {top} ops:")
    for name, ms in by_op.most_common(top):
        print(f"  {ms:8.1f} ms  {100 * ms / total:5.1f} %  {name}")


if __name__ == "__main__":
    main()

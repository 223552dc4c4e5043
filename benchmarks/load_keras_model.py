"""Time ``edgeclf.models.io.load_keras_model`` against the plain ``keras.models.load_model`` and check
that both give the same model (docstring of ``edgeclf.models.io._h5_weights_in_memory``).

Usage (run one at a time; each timing in its own fresh process, so neither warms the other):

    python benchmarks/load_keras_model.py tiny NAME OUT_DIR    # save a tiny registry model NAME
                                                               # (after one Adam step) to OUT_DIR/model.keras
    python benchmarks/load_keras_model.py time MODEL_DIR fast|plain
    python benchmarks/load_keras_model.py compare MODEL_DIR    # weights and predictions equal?

``time`` prints the wall and CPU seconds of the load call alone (TensorFlow already imported) and the
peak RSS. On a shared machine the CPU seconds vary less than the wall seconds.
"""
import resource
import sys
import time
from pathlib import Path

import numpy as np

from edgeclf._keras import keras
from edgeclf.models.io import load_keras_model


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _plain(d: Path):
    return keras.models.load_model(Path(d) / "model.keras", compile=False)


def main(argv: list[str]) -> None:
    cmd = argv[0]
    if cmd == "tiny":
        from edgeclf.models import MODELS, ModelConfig, build_model

        name, out = argv[1], Path(argv[2])
        model = build_model(ModelConfig(name=name, **MODELS[name].tiny), (32, 32, 3), 10)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        rng = np.random.default_rng(0)
        model.fit(rng.uniform(0, 255, (8, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 8),
                  batch_size=8, epochs=1, verbose=0)
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / "model.keras")
        print(f"{out / 'model.keras'}: {(out / 'model.keras').stat().st_size / 1e6:.1f} MB, "
              f"{model.count_params()} params")
    elif cmd == "time":
        d, mode = Path(argv[1]), argv[2]
        rss0 = _rss_mb()
        t, c = time.perf_counter(), time.process_time()
        (load_keras_model if mode == "fast" else _plain)(d)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        print(f"{mode}: {dt:.2f} s wall, {dc:.2f} s CPU (user + sys, all threads), "
              f"peak RSS {_rss_mb():.0f} MB (before the load {rss0:.0f} MB)")
    elif cmd == "compare":
        d = Path(argv[1])
        fast, plain = load_keras_model(d), _plain(d)
        assert len(fast.weights) == len(plain.weights)
        same_w = all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(fast.weights, plain.weights))
        shape = (4, *(n or 32 for n in fast.input_shape[1:]))
        x = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
        same_p = np.array_equal(fast.predict(x, verbose=0), plain.predict(x, verbose=0))
        print(f"{len(fast.weights)} weight arrays equal: {same_w}; predictions on {shape} equal: {same_p}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

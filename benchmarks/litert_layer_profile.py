"""Per-layer LiteRT int8 speed-up over fp32: which convolutions of a model gain from int8 and which don't.

Usage: ``python benchmarks/litert_layer_profile.py MODEL_DIR [--rounds 15] [--calls 50] [--threads 1]
[--out DIR]``.

Why: the Python LiteRT interpreter exposes no per-operator profiler (``benchmark_model
--enable_op_profiling`` is a C++ tool not in the wheel), and ``litert_speedup.py`` only times whole
files. So every convolution of MODEL_DIR's float ``model.keras`` (Conv2D, DepthwiseConv2D, Dense;
nested base models included) is rebuilt as a one-layer model with the same input shape, kernel,
strides, padding and weights, followed by the ReLU6 that XNNPACK fuses into it, converted to an fp32
and a full-integer int8 TFLite file (per-channel weights, int8 input and output, representative
dataset of 16 random inputs: the timing does not depend on the values), and timed batch-1 with
``ai_edge_litert`` (default resolver = XNNPACK) by ``litert_speedup.interleaved``, as whole files
are timed: both files in one process, ``--calls`` calls of one then the other, order alternating
over ``--rounds``. Reported per layer: MACs, the median over rounds of each file's per-round p50
(microseconds) and the fp32/int8 ratio; summed per
operator kind (1x1 conv, 3x3 conv, depthwise, dense). A one-layer file adds a fixed invoke overhead
(~several microseconds) that the whole model pays once, so small layers' ratios lean towards 1.

Writes ``layers.csv`` and ``summary.md`` into ``--out`` (default ``MODEL_DIR/layer_profile``).
Imports TensorFlow (conversion); run it alone on the machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from benchmarks.litert_speedup import batch1_call, interleaved  # noqa: E402


def conv_layers(model) -> list:
    """The Conv2D / DepthwiseConv2D / Dense layers of ``model`` in graph order, nested models flattened."""
    from edgeclf._keras import keras

    kinds = (keras.layers.DepthwiseConv2D, keras.layers.Conv2D, keras.layers.Dense)
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += conv_layers(layer)
        elif isinstance(layer, kinds):
            out.append(layer)
    return out


def kind(layer) -> str:
    """'depthwise 3x3', 'conv 1x1', 'conv 3x3' or 'dense' (the operator class XNNPACK runs)."""
    name = type(layer).__name__
    if name == "Dense":
        return "dense"
    k = "x".join(map(str, layer.kernel_size))
    return f"depthwise {k}" if name == "DepthwiseConv2D" else f"conv {k}"


def macs(layer) -> int:
    """Multiply-accumulates per image of ``layer`` (its weights times output positions)."""
    out = layer.output_shape
    positions = int(np.prod(out[1:-1])) if len(out) > 2 else 1
    return int(np.prod(layer.get_weights()[0].shape)) * positions


def one_layer_model(layer):
    """float32 keras model: the input of ``layer`` -> a copy of ``layer`` (its weights) -> ReLU6."""
    from edgeclf._keras import keras

    cfg = {**layer.get_config(), "name": "op", "activation": None, "dtype": "float32"}
    copy = type(layer).from_config(cfg)
    inputs = keras.Input(shape=layer.input_shape[1:])
    y = keras.layers.ReLU(6.0)(copy(inputs))
    copy.set_weights(layer.get_weights())
    return keras.Model(inputs, y)


def convert(model, int8: bool) -> bytes:
    """An fp32, or full-integer int8 (int8 input/output), TFLite flatbuffer of ``model``."""
    from edgeclf._keras import tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        shape = (1, *model.input_shape[1:])
        rng = np.random.default_rng(0)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.normal(0, 1, shape).astype(np.float32)] for _ in range(16))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


def profile(model_dir: Path, rounds: int, calls: int, threads: int) -> list[dict]:
    """One dict per convolution: name, kind, input/output shapes, MACs, fp32/int8 p50 (us), ratio."""
    from edgeclf.models.io import load_keras_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, layer in enumerate(conv_layers(load_keras_model(model_dir))):
            m = one_layer_model(layer)
            paths = {}
            for fmt in ("fp32", "int8"):
                paths[fmt] = Path(tmp) / f"{i}_{fmt}.tflite"
                paths[fmt].write_bytes(convert(m, fmt == "int8"))
            times = interleaved({f: batch1_call(p, threads) for f, p in paths.items()}, rounds, calls, warmup=20)
            us = {f: 1000 * float(np.median([np.median(t) for t in v])) for f, v in times.items()}
            rows.append({"layer": layer.name, "kind": kind(layer), "input": "x".join(map(str, layer.input_shape[1:])),
                         "output": "x".join(map(str, layer.output_shape[1:])), "macs": macs(layer),
                         "fp32_us": round(us["fp32"], 2), "int8_us": round(us["int8"], 2),
                         "ratio": round(us["fp32"] / us["int8"], 3)})
            print(f"{rows[-1]['layer']:28s} {rows[-1]['kind']:14s} {rows[-1]['input']:>12s} "
                  f"{rows[-1]['fp32_us']:8.1f} us {rows[-1]['int8_us']:8.1f} us  {rows[-1]['ratio']:.2f}x", flush=True)
    return rows


def summary(rows: list[dict]) -> str:
    """Markdown: per operator kind the layers, MACs, summed fp32 and int8 us and their ratio, and the total."""
    lines = ["| operator | layers | MACs (M) | fp32 sum (us) | int8 sum (us) | fp32 / int8 | share of int8 time |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    total_int8 = sum(r["int8_us"] for r in rows)
    groups = sorted({r["kind"] for r in rows}) + ["all"]
    for g in groups:
        sel = [r for r in rows if g == "all" or r["kind"] == g]
        f, q = sum(r["fp32_us"] for r in sel), sum(r["int8_us"] for r in sel)
        lines.append(f"| {g} | {len(sel)} | {sum(r['macs'] for r in sel) / 1e6:.1f} | {f:.0f} | {q:.0f} | "
                     f"{f / q:.2f}x | {100 * q / total_int8:.0f} % |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    out = a.out or a.model_dir / "layer_profile"
    rows = profile(a.model_dir, a.rounds, a.calls, a.threads)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "layers.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "summary.md").write_text(summary(rows))
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

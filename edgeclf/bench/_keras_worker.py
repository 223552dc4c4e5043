"""Bench worker kinds that need TensorFlow: the float original and the default-converter reference.

* ``keras-function``: ``tf.function(model, jit_compile=False, reduce_retracing=True)`` called on
  a prepared ``tf.constant`` -- the fair float baseline every speed-up is relative to; also
  computes the original's test-set probabilities (reference for accuracy drop and agreement).
* ``keras-gpu``: the ``keras-function`` timing on the first GPU TensorFlow lists (``/GPU:0``; the
  device name is recorded); without a GPU the result says ``no_gpu`` and nothing is timed. The
  CPU kinds hide the GPUs, so their rows are always the CPU's.
* ``keras-predict``: ``model.predict(x, verbose=0)`` -- the convenient but per-call heavy path
  (it builds a data pipeline each call); accuracy is the same model's, taken from the other row.
* ``convert-default``: ``tf.lite.TFLiteConverter.from_keras_model(model)`` with
  ``optimizations=[tf.lite.Optimize.DEFAULT]`` and no representative data (dynamic-range
  weights), written to ``out_file``; the parent then measures it like any other artifact.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgeclf.bench._worker_base import ACCURACY_CHUNK, Phase, batch_of, views
from edgeclf.bench.config import TimingConfig
from edgeclf.bench.timing import latency_stats, peak_rss_mb, throughput_stats
from edgeclf.runtime.base import mean_of_views


def _to_probs(out: np.ndarray) -> np.ndarray:
    from edgeclf.runtime.base import looks_like_probs, softmax

    out = np.asarray(out, dtype=np.float32).reshape(len(out), -1)
    return out if looks_like_probs(out, 1e-3) else softmax(out)


def run_keras(spec: dict, phase: Phase) -> None:
    """Run one TensorFlow-side worker kind (see the module docstring)."""
    phase.enter("load")
    from edgeclf._keras import tf

    threads = int(spec["threads"])
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    gpus = tf.config.list_physical_devices("GPU")
    res = phase.result
    if spec["kind"] == "keras-gpu" and not gpus:
        res.update(engine=f"tensorflow {tf.__version__}", device="no GPU", no_gpu=True)
        return
    if spec["kind"] != "keras-gpu":
        tf.config.set_visible_devices([], "GPU")  # the CPU rows are the CPU's even on a GPU machine
    from edgeclf.models.io import load_keras_model

    model = load_keras_model(Path(spec["path"]))
    if spec["kind"] == "convert-default":
        _convert_default(tf, model, Path(spec["out_file"]))
        res["tensorflow"] = tf.__version__
        return
    device = "CPU"
    if spec["kind"] == "keras-gpu":
        details = tf.config.experimental.get_device_details(gpus[0])
        device = f"GPU {details.get('device_name', gpus[0].name)} (/GPU:0 of {len(gpus)})"
    res.update(engine=f"tensorflow {tf.__version__}", device=device, fixed_batch=None)
    timing = TimingConfig(**spec["timing"])
    images = np.load(spec["images"], mmap_mode="r")
    n_batch = int(spec["batch_size"])
    tta = bool(spec.get("tta"))  # flip test-time augmentation: each image and its mirror in one batch
    one, many = views(batch_of(images, 1), tta), views(batch_of(images, n_batch), tta)
    phase.enter("run")
    if spec["kind"] in ("keras-function", "keras-gpu"):
        fn = tf.function(model, jit_compile=False, reduce_retracing=True)
        with tf.device("/GPU:0" if spec["kind"] == "keras-gpu" else "/CPU:0"):
            t1, tn = tf.constant(one), tf.constant(many)
            # .numpy() copies the result back to the host: the GPU latency includes the transfers
            res["latency"] = latency_stats(lambda: fn(t1, training=False).numpy(), timing)
            res["throughput"] = throughput_stats(lambda: fn(tn, training=False).numpy(), n_batch, timing)
        res["throughput_mode"] = f"one call of batch {len(many)}"
    elif spec["kind"] == "keras-predict":
        res["latency"] = latency_stats(lambda: model.predict(one, verbose=0), timing)
        res["throughput"] = throughput_stats(lambda: model.predict(many, batch_size=len(many), verbose=0),
                                             n_batch, timing)
        res["throughput_mode"] = f"model.predict of {len(many)} images, batch_size={len(many)}"
    else:
        raise ValueError(f"unknown worker kind {spec['kind']!r}")
    res["peak_rss_mb"] = peak_rss_mb()
    if spec["accuracy"] and spec["kind"] == "keras-function":
        phase.enter("accuracy")
        t0 = time.perf_counter()
        probs = []
        for i in range(0, len(images), ACCURACY_CHUNK):
            chunk = np.asarray(images[i:i + ACCURACY_CHUNK], dtype=np.float32)
            p = _to_probs(fn(tf.constant(views(chunk, tta)), training=False).numpy())
            probs.append(mean_of_views(p) if tta else p)
        res["accuracy_seconds"] = time.perf_counter() - t0
        np.save(spec["probs_out"], np.concatenate(probs))


def _convert_default(tf, model, out_file: Path) -> None:
    from edgeclf._io import write_bytes

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    write_bytes(out_file, conv.convert())

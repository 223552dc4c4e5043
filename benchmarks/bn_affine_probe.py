"""Would a per-channel affine be cheaper than BatchNormalization in inference mode in a fine-tune step?

    python benchmarks/bn_affine_probe.py [--img-size 160] [--batch-size 64] [--steps 40] [--warmup 10]

``mobilenet_v2``'s default recipe fine-tunes the whole base with its BatchNorm layers in inference mode
(moving statistics fixed) and their scale and offset trainable (``--train-bn``). Such a layer computes
``gamma * (x - mean) / sqrt(var + eps) + beta``, an affine map per channel, yet TensorFlow runs it as
``FusedBatchNormV3`` and its gradient op, 16.5 % of the step's op time on a 2-vCPU Zen 4
(``train_step_probe.py --trace``, session 25). This probe times the same train step (MobileNetV2 base,
``--weights none``, a 10-class softmax head, Adam, random images, batch ``--batch-size``) twice in one
process: with the Keras BatchNormalization layers, and with each replaced by :class:`Affine`, which
computes the same function with two trainable per-channel vectors and the statistics folded into
constants (``x * (gamma * rsqrt(var + eps)) + (beta - mean * gamma * rsqrt(var + eps))``). The rounds
alternate between the two, so the VM's drift hits both alike. Prints the median step time of each and
checks that both give the same output on one batch. Writes nothing; run with nothing else running.
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


class Affine(keras.layers.Layer):
    """``x * (gamma * rsqrt(var + eps)) + (beta - mean * gamma * rsqrt(var + eps))`` per channel (last
    axis), gamma and beta trainable, mean and var constants: a BatchNormalization in inference mode."""

    def __init__(self, bn: keras.layers.BatchNormalization, **kw):
        super().__init__(name=bn.name + "_affine", **kw)
        self._src = bn

    def build(self, input_shape):
        bn = self._src
        self.gamma = self.add_weight(name="gamma", shape=bn.gamma.shape, initializer="ones")
        self.beta = self.add_weight(name="beta", shape=bn.beta.shape, initializer="zeros")
        self.gamma.assign(bn.gamma)
        self.beta.assign(bn.beta)
        self.mean = tf.constant(bn.moving_mean.numpy())
        self.inv_std = tf.constant(1.0 / np.sqrt(bn.moving_variance.numpy() + bn.epsilon))

    def call(self, x):
        scale = self.gamma * self.inv_std
        return x * scale + (self.beta - self.mean * scale)


def random_bn_base(img_size: int, gamma_beta: bool = False) -> keras.Model:
    """A MobileNetV2 base (``weights=None``) with random BatchNorm moving statistics (and, with
    ``gamma_beta``, random scales and offsets), so that an equivalence check means something."""
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(img_size, img_size, 3))
    rng = np.random.default_rng(0)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            if gamma_beta:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
                layer.beta.assign(rng.normal(0, 0.1, n).astype("float32"))
    return base


def _models(img_size: int) -> tuple[keras.Model, keras.Model]:
    base = random_bn_base(img_size)
    affine_base = keras.models.clone_model(
        base, clone_function=lambda layer: Affine(layer) if isinstance(layer, keras.layers.BatchNormalization)
        else layer.__class__.from_config(layer.get_config()))
    for src, dst in zip(base.layers, affine_base.layers):
        if not isinstance(src, keras.layers.BatchNormalization) and src.weights:
            dst.set_weights(src.get_weights())

    def head(b):
        inp = keras.Input((img_size, img_size, 3))
        x = b(inp, training=False)  # BatchNorm in inference mode, as the recipe's fine-tune phase
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))

    a, b = head(base), head(affine_base)
    b.layers[-1].set_weights(a.layers[-1].get_weights())
    for m in (a, b):
        m.compile(optimizer=keras.optimizers.Adam(2e-4), loss="categorical_crossentropy")
    return a, b


def probe_args(doc: str) -> argparse.Namespace:
    """The probes' command line: --img-size, --batch-size, --steps, --warmup."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--img-size", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per model, in rounds of 5")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps per model first")
    return ap.parse_args()


def random_batch(batch_size: int, img_size: int):
    """A fixed batch: float32 (N, S, S, 3) images uniform in [-1, 1] and one-hot (N, 10) labels."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.uniform(-1, 1, (batch_size, img_size, img_size, 3)).astype("float32"))
    return x, tf.one_hot(rng.integers(0, 10, batch_size), 10)


def time_alternating(models: dict, x, y, steps: int, warmup: int) -> dict[str, float]:
    """Time ``train_on_batch(x, y)`` of each compiled model: ``warmup`` untimed steps each, then rounds
    of 5 steps per model in turn until each has ``steps`` timed ones (so drift hits all alike). Prints
    each model's p50 and p10-p90 and returns {label: step p50 in ms}."""
    for model in models.values():
        for _ in range(warmup):
            model.train_on_batch(x, y)
    times: dict[str, list[float]] = {label: [] for label in models}
    for _ in range(steps // 5):
        for label, model in models.items():
            for _ in range(5):
                t = time.perf_counter()
                model.train_on_batch(x, y)
                times[label].append(time.perf_counter() - t)
    for k, v in times.items():
        print(f"{k:18s} step p50 {1000 * np.median(v):.0f} ms, p10-p90 {1000 * np.percentile(v, 10):.0f}-"
              f"{1000 * np.percentile(v, 90):.0f} ms ({len(v)} steps)")
    return {k: 1000 * float(np.median(v)) for k, v in times.items()}


def main() -> None:
    args = probe_args(__doc__)
    bn_model, affine_model = _models(args.img_size)
    x, y = random_batch(args.batch_size, args.img_size)
    diff = float(np.max(np.abs(bn_model.predict(x, verbose=0) - affine_model.predict(x, verbose=0))))
    print(f"max |softmax(BatchNorm) - softmax(Affine)| on one batch before training: {diff:.2e}", flush=True)
    med = time_alternating({"BatchNormalization": bn_model, "Affine": affine_model}, x, y, args.steps, args.warmup)
    print(f"Affine / BatchNormalization step time: {med['Affine'] / med['BatchNormalization']:.3f}")


if __name__ == "__main__":
    main()

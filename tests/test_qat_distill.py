"""QAT fine-tuning with knowledge distillation from the float model (``edgeclf export --qat --qat-distill``).

Real tfmot wrapping, range pass and fine-tuning of a tiny classifier; the labels are unrelated to
the float model's predictions, so cross-entropy on them pulls the QAT model away from the float
model while distillation holds it there.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeclf._keras import keras
from edgeclf.errors import ConfigError

L = keras.layers


def _classifier() -> keras.Model:
    x = keras.Input((12, 12, 3))
    y = L.Rescaling(1 / 127.5, offset=-1.0)(x)
    y = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(y)))
    y = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(y)))
    model = keras.Model(x, L.Dense(4, activation="softmax", name="head")(L.GlobalAveragePooling2D()(y)))
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 20.0, bias])  # a confident float model: peaked outputs to stay close to
    for layer in model.layers:  # inference-mode BatchNorm, as the transfer models' base: with random
        if isinstance(layer, L.BatchNormalization):  # moving statistics, training-mode outputs would
            layer.trainable = False                  # differ from the float model's before any step
    return model


def _kl(p, q) -> float:
    """mean KL(p || q) over images, nats."""
    p, q = np.clip(p, 1e-12, 1), np.clip(q, 1e-12, 1)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1)))


def test_distilled_qat_stays_closer_to_the_float_model_than_label_qat(tmp_path):
    from edgeclf.data.dataset import ArraySplit
    from edgeclf.export.pipeline import _qat_teacher
    from edgeclf.export.prune import FineTune
    from edgeclf.export.qat import quantize_aware

    keras.utils.set_random_seed(0)
    model = _classifier()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (128, 12, 12, 3), dtype=np.uint8)
    x = images.astype(np.float32)
    float_probs = model.predict(x, verbose=0)
    labels = ((float_probs.argmax(-1) + 1 + np.arange(128) % 3) % 4).astype(np.int32)  # never the float top-1
    ft = FineTune(train=ArraySplit(x=images, labels=labels), num_classes=4, batch_size=16, lr=1e-2,
                  label_smoothing=0.0)
    assert _qat_teacher(model, 0.0, tmp_path) is None
    kl = {}
    for alpha in (0.0, 1.0):
        keras.utils.set_random_seed(0)
        teacher = _qat_teacher(model, alpha, tmp_path)
        qat = quantize_aware(model, FineTune(**{**ft.__dict__, "teacher": teacher}), 4, preserve_sparsity=False)
        probs = qat.predict(x, verbose=0)
        kl[alpha] = _kl(float_probs, probs)
        print(f"alpha {alpha}: top-1 agreement with the float model {np.mean(probs.argmax(-1) == float_probs.argmax(-1)):.3f}")
    print("KL(float || QAT) labels / distilled:", kl)
    assert kl[1.0] < kl[0.0] / 3, kl
    # the float model, the teacher, was not trained along
    np.testing.assert_allclose(model.predict(x, verbose=0), float_probs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_qat_distill_out_of_range_is_a_config_error(alpha):
    from edgeclf.export.config import ExportConfig, Precision

    with pytest.raises(ConfigError, match="--qat-distill"):
        ExportConfig(precisions=(Precision.INT8,), qat=True, qat_distill=alpha)

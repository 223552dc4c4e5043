"""Magnitude pruning with tensorflow-model-optimization, then a short fine-tune.

``prune_model`` wraps every Conv2D / DepthwiseConv2D / Dense layer (except a first conv that
reads the raw 1- or 3-channel image, whose few weights matter most) in ``prune_low_magnitude``
with a ``PolynomialDecay`` schedule from 0 to the target sparsity, fine-tunes on the training
split with the model's own loss (categorical cross-entropy with the training label smoothing),
and strips the wrappers. Nested models (the MobileNetV2 base) are cloned recursively, because
tfmot cannot wrap a whole nested model. Zeroed weights stay exactly zero, so they survive BN
folding and symmetric int8 quantization (zero point 0) — :func:`edgeclf.export.artifacts.int8_weight_report`
counts them in the exported files.

Sources: https://www.tensorflow.org/model_optimization/guide/pruning/comprehensive_guide
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from edgeclf._keras import keras
from edgeclf.errors import ExportError

log = logging.getLogger(__name__)

PRUNABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
#: QAT fine-tuning peak = this x the peak learning rate of the training run's last phase. Until
#: 2026-12 it was 0.01 (NVIDIA pytorch-quantization docs, "Quantization Aware Training": "starting at
#: 1 % of the initial training learning rate"), but the transfer models' last phase is already a
#: fine-tune (Adam 2e-4 for mobilenet_v2), where 1 % (2e-6) moves a weight by less than one int8
#: step in an epoch. Measured on the CIFAR-10 mobilenet_v2, one QAT epoch (docs/quantization.md):
#: 2e-6 -> 2e-5 raised the int8 TFLite top-1 agreement with the float model 0.971 -> 0.974 with
#: label loss and 0.972 -> 0.979 with distillation (--qat-distill 1; 5e-5: 0.978).
QAT_LR_FACTOR = 0.1


def _tfmot():
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("--prune/--qat need: pip install tensorflow-model-optimization") from exc
    return tfmot


@dataclass(frozen=True)
class SparsityReport:
    """Measured zeros in the kernels of Conv/Dense layers of the stripped model.

    ``layers`` maps layer name -> {"params", "zeros", "sparsity"}; ``kernel_sparsity`` is zeros /
    params over all those kernels (pruned or not); ``target`` the requested sparsity.
    """

    target: float
    kernel_sparsity: float
    layers: dict

    def to_dict(self) -> dict:
        return {"target": self.target, "kernel_sparsity": self.kernel_sparsity, "layers": self.layers}


def _kernel(layer) -> np.ndarray | None:
    w = getattr(layer, "depthwise_kernel", None)
    if w is None:
        w = getattr(layer, "kernel", None)
    return None if w is None else np.asarray(w.numpy())


def _walk(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk(layer)
        else:
            yield layer


def sparsity_report(model, target: float) -> SparsityReport:
    """Count zeros in every Conv/Dense kernel of ``model`` (nested models included)."""
    layers, total, zeros = {}, 0, 0
    for layer in _walk(model):
        if isinstance(layer, PRUNABLE) and (k := _kernel(layer)) is not None:
            z = int(np.count_nonzero(k == 0))
            layers[layer.name] = {"params": int(k.size), "zeros": z, "sparsity": round(z / k.size, 4)}
            total, zeros = total + k.size, zeros + z
    return SparsityReport(target=target, kernel_sparsity=round(zeros / total, 4) if total else 0.0, layers=layers)


def _wrap_for_pruning(model, schedule):
    tfmot = _tfmot()
    first = {"seen": False, "wrapped": 0}

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        if isinstance(layer, PRUNABLE):
            if not first["seen"] and isinstance(layer, keras.layers.Conv2D) and layer.input_shape[-1] in (1, 3):
                first["seen"] = True  # the image-reading conv stays dense
                return layer
            first["seen"] = True
            first["wrapped"] += 1
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    wrapped = keras.models.clone_model(model, clone_function=clone)
    if not first["wrapped"]:
        raise ExportError(f"model '{model.name}' has no Conv2D/Dense layer to prune")
    return wrapped


class _NestedMaskUpdate(keras.callbacks.Callback):
    """Update pruning masks of wrappers inside nested models at every step.

    MobileNetV2 calls its base with ``training=False`` (BatchNorm in inference mode), so the
    wrappers inside never see ``training=True``: their step counter never advances and their masks
    never update. This callback advances the step and updates the masks for them, eagerly.
    """

    def __init__(self, wrappers: list) -> None:
        super().__init__()
        self.wrappers, self.step = wrappers, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.step += 1
        for layer in self.wrappers:
            layer.pruning_step.assign(self.step)
            layer.pruning_obj.conditional_mask_update()
            layer.pruning_obj.weight_mask_op()


def _nested_wrappers(model) -> list:
    _tfmot()
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (
        PruneLowMagnitude as wrapper,
    )

    return [layer for nested in model.layers if isinstance(nested, keras.Model)
            for layer in _walk(nested) if isinstance(layer, wrapper)]


def _last_phase(train_cfg) -> tuple[float, int]:
    """(peak learning rate, epochs) of the last training phase of ``train_cfg`` (a TrainConfig):
    the fine-tune phase of a two-phase transfer model, else the one training phase."""
    from edgeclf.models import get_spec

    if get_spec(train_cfg.model.name).two_phase:
        if train_cfg.epochs:
            return train_cfg.fine_tune_lr, train_cfg.epochs
        return train_cfg.lr, train_cfg.head_epochs
    return train_cfg.lr, train_cfg.epochs


def rewound_lr(train_cfg, epochs: int) -> float:
    """Peak learning rate for ``epochs`` epochs of pruning fine-tuning: learning-rate rewinding.

    The rate the training run's last phase had ``epochs`` epochs before its end (linear warm-up over
    ``warmup_fraction`` of the phase, then cosine decay to 0, :class:`edgeclf.train.schedules.WarmupCosine`);
    fine-tuning then decays it to 0 again. Renda, Frankle & Carbin (ICLR 2020), "Comparing Rewinding
    and Fine-tuning in Neural Network Pruning": re-training the pruned weights with the tail of the
    original schedule recovers more accuracy than a small constant fine-tuning rate. For the CIFAR-10
    ``cnn`` recipe (SGD peak 0.2, 26 epochs, 15 % warm-up): 2 epochs -> 0.0040, 3 -> 0.0090, 4 -> 0.0158
    (the recipe's peak 0.2 itself would undo the trained weights). Returns the phase peak when
    ``epochs`` reaches back into the warm-up.
    """
    peak, total = _last_phase(train_cfg)
    warm = float(getattr(train_cfg, "warmup_fraction", 0.0)) * total
    start = total - epochs
    if start <= warm or total <= warm:
        return float(peak)
    progress = (start - warm) / (total - warm)
    return float(0.5 * peak * (1.0 + np.cos(np.pi * progress)))


def qat_lr(train_cfg) -> float:
    """Peak learning rate of quantization-aware fine-tuning: :data:`QAT_LR_FACTOR` x the last phase's
    peak (0.02 for the CIFAR-10 ``cnn`` recipe's SGD 0.2, 2e-5 for mobilenet_v2's Adam 2e-4 fine-tune),
    cosine-decayed to 0."""
    return QAT_LR_FACTOR * float(_last_phase(train_cfg)[0])


def qat_epochs_for(train_cfg) -> int:
    """Epochs of quantization-aware fine-tuning when ``--qat-epochs`` is not given: 2 for transfer
    models fine-tuned with ``--train-bn``, whose post-training int8 loses most, else 1.

    Measured on the CIFAR-10 ``mobilenet_v2 --train-bn`` at 160 px (92.95 % float, Zen 5; README,
    benchmarks/results/cifar10-mobilenet_v2-trainbn-160-14ep): one QAT epoch left the int8 TFLite /
    ONNX 0.33 / 0.24 points below the float model, two left them 0.10 / 0.08 below (issue 11's target
    is 0.3). The ``cnn`` recipe's post-training int8 loses 0.00-0.04 points and needs no QAT at all.
    """
    from edgeclf.models import get_spec

    return 2 if get_spec(train_cfg.model.name).two_phase and getattr(train_cfg, "train_bn", False) else 1


@dataclass(frozen=True)
class FineTune:
    """How pruning and QAT fine-tune: data, loss and optimizer settings.

    ``train``: the training images, an image source (:mod:`edgeclf.data.dataset`; in memory or
    streamed from disk); ``optimizer`` ``"sgd"``
    (momentum 0.9, Nesterov) or ``"adam"`` as in training; ``lr`` its peak, cosine-decayed to 0;
    ``label_smoothing`` and ``augment`` (an AugmentConfig or None) as in training; ``teacher``
    (an :class:`edgeclf.train.distill.Teacher` or None): fine-tune on the distillation loss against it
    instead of cross-entropy on the labels alone (QAT's ``--qat-distill``).
    """

    train: object
    num_classes: int
    batch_size: int
    lr: float
    label_smoothing: float
    optimizer: str = "adam"
    seed: int = 0
    augment: object = None
    teacher: object = None

    def steps(self, epochs: int) -> int:
        return epochs * int(np.ceil(len(self.train) / self.batch_size))


def fine_tune(model, ft: FineTune, epochs: int, callbacks: list) -> None:
    """Fine-tune ``model`` in place for ``epochs`` epochs through the training's own
    :func:`edgeclf.train.fit.fit`: cross-entropy with the training label smoothing, the training
    optimizer kind, peak ``ft.lr`` cosine-decayed to 0, no weight decay, batches shuffled and
    augmented as in training; with ``ft.teacher``, the distillation loss of
    :func:`edgeclf.train.distill.distillation_loss` (the teacher's outputs computed per augmented batch
    or cached, as ``ft.teacher.targets`` says).
    """
    from edgeclf.train.config import Optimizer
    from edgeclf.train.fit import FitPlan, fit

    plan = FitPlan(optimizer=Optimizer(ft.optimizer), lr=ft.lr, batch_size=ft.batch_size,
                   label_smoothing=ft.label_smoothing, augment=ft.augment, seed=ft.seed, teacher=ft.teacher)
    fit(model, ft.train, ft.num_classes, plan, epochs, callbacks)


def prune_model(model, ft: FineTune, sparsity: float, epochs: int) -> tuple[object, SparsityReport]:
    """Prune ``model`` to ``sparsity`` while fine-tuning ``epochs`` epochs; returns (stripped model, report).

    The schedule reaches the target after 2/3 of the fine-tuning steps and holds it for the rest.
    ``model``'s layers are reused (its weights change): pass a fresh copy.

    Raises:
        ExportError: the model has no prunable layer.
    """
    tfmot = _tfmot()
    steps = ft.steps(epochs)
    frequency = max(1, min(100, steps // 20))
    end_step = max(frequency, (2 * steps // 3) // frequency * frequency)
    schedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=float(sparsity),
                                                    begin_step=0, end_step=end_step, frequency=frequency)
    wrapped = _wrap_for_pruning(model, schedule)
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), _NestedMaskUpdate(_nested_wrappers(wrapped))]
    fine_tune(wrapped, ft, epochs, callbacks)
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    report = sparsity_report(stripped, sparsity)
    for name, layer in report.layers.items():
        log.info("  %-40s %9d weights  %5.1f%% zero", name, layer["params"], 100 * layer["sparsity"])
    log.info("pruned to %.1f%% kernel sparsity (target %.0f%%)", 100 * report.kernel_sparsity, 100 * sparsity)
    return stripped, report

"""``train(config) -> TrainResult``: fit a model and write its model directory.

Model directory (see DESIGN.md): model.keras (float32), config.json, labels.txt, history.csv,
curves.png, confusion_matrix.png, metrics.json. Files are written atomically into a temporary
directory that replaces ``out/name`` only when everything succeeded.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclf import __version__
from edgeclf._io import make_temp_dir, replace_dir, reported_as, write_json, write_text
from edgeclf._keras import keras, set_seed
from edgeclf._versions import tool_versions
from edgeclf.data import balanced_class_weights, load_dataset
from edgeclf.models import build_model, get_spec
from edgeclf.models.flops import count_macs
from edgeclf.train.config import ClassWeight, TrainConfig
from edgeclf.train.evaluate import evaluate_model, write_eval_artifacts
from edgeclf.train.fit import FitPlan, fit

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced: ``model_dir`` and the test ``metrics`` (as in metrics.json)."""

    model_dir: Path
    metrics: dict
    interrupted: bool = False


class _BestCheckpoint(keras.callbacks.Callback):
    """Keeps the best validation-accuracy weights in memory and on disk (for Ctrl-C recovery)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path, self.best, self.weights = path, -1.0, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        acc = logs.get("val_accuracy", logs.get("accuracy", -1.0))  # train accuracy when there is no val split
        if acc > self.best:
            self.best, self.weights = acc, self.model.get_weights()
            self.model.save_weights(str(self.path))


class _EpochLog(keras.callbacks.Callback):
    """Records one history row per finished epoch as it ends, so an interrupted run keeps its history."""

    def __init__(self):
        super().__init__()
        self.phase, self.rows = "", []

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": len(self.rows) + 1, "phase": self.phase,
                          **{k: float(v) for k, v in (logs or {}).items()}})


def _history_csv(history: list[dict]) -> str:
    keys = sorted({k for row in history for k in row})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    return buf.getvalue()


def _float32_copy(model: keras.Model, cfg: TrainConfig, input_shape, num_classes) -> keras.Model:
    """Rebuild ``model`` under the float32 policy and copy the weights (for mixed-precision runs)."""
    keras.mixed_precision.set_global_policy("float32")
    m32 = build_model(cfg.model.__class__(**{**cfg.model.to_dict(), "weights": "none"}), input_shape, num_classes)
    m32.set_weights([np.asarray(w, dtype=np.float32) for w in model.get_weights()])
    return m32


def train(cfg: TrainConfig, progress: bool = True,
          extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``, evaluate on the test split, write the model directory.

    Two-phase transfer learning for models whose spec says so (``mobilenet_v2``): ``head_epochs`` with the base frozen at
    ``lr``, then ``epochs`` with the last ``fine_tune_layers`` base layers trainable at
    ``fine_tune_lr`` (BatchNorm frozen throughout). Ctrl-C stops training cleanly: the best
    weights so far are kept, evaluated and saved.

    Args:
        cfg: the training configuration.
        progress: show a progress bar while decoding image folders.
        extra_callbacks: Keras callbacks run after edgeclf's own (best-weights checkpoint, history,
            early stopping) in every phase, e.g. for logging; one raising ``KeyboardInterrupt``
            behaves like Ctrl-C.

    Returns:
        TrainResult with the model directory ``Path(cfg.out) / cfg.run_name`` and test metrics.

    Raises:
        edgeclf.errors.DataError: bad data. edgeclf.errors.ConfigError: bad configuration.
        edgeclf.errors.WeightsError: pretrained weights not loadable.
    """
    spec = get_spec(cfg.model.name)
    spec.validate_weights(cfg.model.weights)  # before spending minutes on loading the data
    set_seed(cfg.seed)
    channels = 3
    ds = load_dataset(cfg.data, channels=channels, progress=progress)
    log.info("%s", ds.summary())
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if cfg.mixed_precision else "float32")
    model = build_model(cfg.model, ds.input_shape, ds.num_classes)
    class_weight = (balanced_class_weights(ds.y_train, ds.num_classes)
                    if cfg.class_weight is ClassWeight.BALANCED else None)

    out_dir = Path(cfg.out) / cfg.run_name
    work = make_temp_dir(out_dir)  # .<name>.partial-XXXX beside out_dir, mode 0o777 & ~umask (not mkdtemp's 0700)
    best = _BestCheckpoint(work / "best.weights.h5")
    epoch_log = _EpochLog()
    callbacks = [best, epoch_log]
    if cfg.patience:
        callbacks.append(keras.callbacks.EarlyStopping("val_accuracy", patience=cfg.patience, mode="max",
                                                       restore_best_weights=True))
    callbacks += list(extra_callbacks)
    history = epoch_log.rows
    interrupted = False
    t0 = time.perf_counter()
    try:
        phases = []
        if spec.two_phase:
            if cfg.head_epochs:
                phases.append(("head", cfg.head_epochs, cfg.lr, 0))
            if cfg.epochs:
                phases.append(("fine-tune", cfg.epochs, cfg.fine_tune_lr, cfg.fine_tune_layers))
        else:
            phases.append(("train", cfg.epochs, cfg.lr, None))
        for phase, epochs, lr, layers in phases:
            if layers is not None:
                n = spec.make_base_trainable(model, layers)
                log.info("phase %s: %d epochs, lr %g, %d trainable base layers", phase, epochs, lr, n)
            epoch_log.phase = phase
            plan = FitPlan(optimizer=cfg.optimizer, lr=lr, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
                           label_smoothing=cfg.label_smoothing, warmup_fraction=cfg.warmup_fraction,
                           augment=cfg.augment, seed=cfg.seed)
            fit(model, ds.x_train, ds.y_train, ds.num_classes, plan, epochs, callbacks,
                validation=(ds.x_val, ds.y_val), class_weight=class_weight)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: keeping the best weights so far (val top-1 %.4f)", best.best)
        if best.weights is None:
            shutil.rmtree(work, ignore_errors=True)
            raise
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    train_seconds = time.perf_counter() - t0
    if best.weights is not None and (interrupted or len(ds.x_val)):
        model.set_weights(best.weights)
    if cfg.mixed_precision:
        model = _float32_copy(model, cfg, ds.input_shape, ds.num_classes)

    try:
        metrics = evaluate_model(model, ds.x_test, ds.y_test, ds.class_names)
        metrics.update({
            "model": cfg.model.name, "dataset": ds.name, "test_split": ds.test_split_name,
            "n_train": len(ds.x_train), "n_val": len(ds.x_val),
            "best_val_top1_acc": round(float(best.best), 4) if best.weights is not None else None,
            "train_seconds": round(train_seconds, 1), "epochs_run": len(history), "interrupted": interrupted,
            "params": int(model.count_params()), "macs_per_image": count_macs(model),
            "flops_per_image": 2 * count_macs(model), "input_shape": list(ds.input_shape),
            "versions": {"edgeclf": __version__, **tool_versions()},
        })
        with reported_as(out_dir, work):
            model.save(work / "model.keras")
            write_json(work / "config.json", cfg.to_dict())
            write_text(work / "labels.txt", "\n".join(ds.class_names) + "\n")
            write_text(work / "history.csv", _history_csv(history))
            write_eval_artifacts(work, metrics, history)
            (work / "best.weights.h5").unlink(missing_ok=True)
        replace_dir(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("test top-1 %.4f (%d images) -> %s", metrics["top1_acc"], metrics["n_test"], out_dir)
    return TrainResult(out_dir, metrics, interrupted)

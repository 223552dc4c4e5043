"""``train(config) -> TrainResult``: fit a model and write its model directory.

Model directory (see DESIGN.md): model.keras (float32), config.json, labels.txt, history.csv,
curves.png, confusion_matrix.png, metrics.json. Files are written atomically into a temporary
directory that replaces ``out/name`` only when everything succeeded.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclf import __version__
from edgeclf._io import write_json, write_text
from edgeclf._keras import keras, set_seed, tf, tool_versions
from edgeclf.data import Dataset, balanced_class_weights, load_dataset
from edgeclf.data.pipeline import make_dataset
from edgeclf.evaluate import evaluate_model, write_eval_artifacts
from edgeclf.models import build_model
from edgeclf.models import mobilenet_v2 as mnv2
from edgeclf.models.flops import count_macs
from edgeclf.schedules import WarmupCosine
from edgeclf.train_config import ClassWeight, Optimizer, TrainConfig

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced: ``model_dir`` and the test ``metrics`` (as in metrics.json)."""

    model_dir: Path
    metrics: dict
    interrupted: bool = False


def _optimizer(kind: Optimizer, schedule, weight_decay: float):
    wd = weight_decay or None
    if kind is Optimizer.SGD:
        opt = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=wd)
    else:
        opt = keras.optimizers.AdamW(schedule, weight_decay=wd) if wd else keras.optimizers.Adam(schedule)
    if wd:
        opt.exclude_from_weight_decay(var_names=["bn", "bias", "gamma", "beta"])
    return opt


def _one_hot(num_classes: int):
    return lambda x, y: (x, tf.one_hot(y, num_classes))


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


def _fit(model, cfg: TrainConfig, ds: Dataset, epochs: int, lr: float, callbacks, class_weight) -> None:
    n = ds.num_classes
    train = make_dataset(ds.x_train, ds.y_train, cfg.batch_size, True, cfg.augment, cfg.seed).map(_one_hot(n))
    val = make_dataset(ds.x_val, ds.y_val, 256, False).map(_one_hot(n)) if len(ds.x_val) else None
    steps = epochs * int(np.ceil(len(ds.x_train) / cfg.batch_size))
    schedule = WarmupCosine(lr, steps, int(cfg.warmup_fraction * steps))
    model.compile(optimizer=_optimizer(cfg.optimizer, schedule, cfg.weight_decay),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks,
              class_weight=class_weight, verbose=1 if log.isEnabledFor(logging.INFO) else 2)


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

    Two-phase transfer learning for ``mobilenet_v2``: ``head_epochs`` with the base frozen at
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
        edgeclf.data.DataError: bad data. ValueError: bad configuration.
        edgeclf.models.mobilenet_v2.WeightsError: weights not loadable.
    """
    if cfg.model.name == "mobilenet_v2":
        mnv2.check_weights(cfg.model.weights)  # before spending minutes on loading the data
    set_seed(cfg.seed)
    channels = 3
    ds = load_dataset(cfg.data, channels=channels, progress=progress)
    log.info("%s", ds.summary())
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if cfg.mixed_precision else "float32")
    model = build_model(cfg.model, ds.input_shape, ds.num_classes)
    class_weight = (balanced_class_weights(ds.y_train, ds.num_classes)
                    if cfg.class_weight is ClassWeight.BALANCED else None)

    out_dir = Path(cfg.out) / cfg.run_name
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{cfg.run_name}.partial-", dir=out_dir.parent))
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
        if cfg.model.name == "mobilenet_v2":
            if cfg.head_epochs:
                phases.append(("head", cfg.head_epochs, cfg.lr, 0))
            if cfg.epochs:
                phases.append(("fine-tune", cfg.epochs, cfg.fine_tune_lr, cfg.fine_tune_layers))
        else:
            phases.append(("train", cfg.epochs, cfg.lr, None))
        for phase, epochs, lr, layers in phases:
            if layers is not None:
                n = mnv2.set_base_trainable(model, layers)
                log.info("phase %s: %d epochs, lr %g, %d trainable base layers", phase, epochs, lr, n)
            epoch_log.phase = phase
            _fit(model, cfg, ds, epochs, lr, callbacks, class_weight)
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
            "n_train": int(len(ds.x_train)), "n_val": int(len(ds.x_val)),
            "best_val_top1_acc": round(float(best.best), 4) if best.weights is not None else None,
            "train_seconds": round(train_seconds, 1), "epochs_run": len(history), "interrupted": interrupted,
            "params": int(model.count_params()), "macs_per_image": count_macs(model),
            "flops_per_image": 2 * count_macs(model), "input_shape": list(ds.input_shape),
            "versions": {"edgeclf": __version__, **tool_versions()},
        })
        model.save(work / "model.keras")
        write_json(work / "config.json", cfg.to_dict())
        write_text(work / "labels.txt", "\n".join(ds.class_names) + "\n")
        write_text(work / "history.csv", _history_csv(history))
        write_eval_artifacts(work, metrics, history)
        (work / "best.weights.h5").unlink(missing_ok=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("test top-1 %.4f (%d images) -> %s", metrics["top1_acc"], metrics["n_test"], out_dir)
    return TrainResult(out_dir, metrics, interrupted)


def load_config(model_dir: Path) -> TrainConfig:
    """Read ``MODEL_DIR/config.json``.

    Raises:
        FileNotFoundError / ValueError: missing or malformed config (message names the file).
    """
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {model_dir} an edgeclf model directory?)")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed config ({exc})") from None

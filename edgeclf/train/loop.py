"""``train(config) -> TrainResult``: fit a model and write its model directory; ``resume(path)``
continues an interrupted run from its checkpoint.

Model directory (see DESIGN.md): model.keras (float32), config.json, labels.txt, history.csv,
curves.png, confusion_matrix.png, metrics.json, predictions.npz (each test image's predicted class),
machine.json (the CPU it trained on). Its files are written into a temporary directory
that replaces ``out/name`` only when everything succeeded. While training, the run checkpoint
``out/.name.partial/`` (:mod:`edgeclf.train.checkpoint`) is updated after every epoch; it is deleted
when the model directory is in place and kept when the run is interrupted or crashes.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from edgeclf import __version__
from edgeclf._io import make_temp_dir, replace_dir, reported_as, write_json, write_text
from edgeclf._keras import keras, set_seed
from edgeclf._machine import load_average, machine_facts
from edgeclf._versions import tool_versions
from edgeclf.data import BUILTIN, balanced_class_weights, native_size, open_dataset
from edgeclf.data.pipeline import source_batches
from edgeclf.errors import ConfigError
from edgeclf.models import build_model, get_spec
from edgeclf.models.flops import count_macs
from edgeclf.models.io import save_keras_model
from edgeclf.train.budget import TimeBudget
from edgeclf.train.checkpoint import (
    EpochState,
    RunCheckpoint,
    checkpoint_dir,
    early_stop,
    find_checkpoint,
    model_dir_of,
)
from edgeclf.train.config import ClassWeight, Distribute, TrainConfig, load_config
from edgeclf.train.distill import load_teacher
from edgeclf.train.distribute import (
    Worker,
    follow_chief,
    is_distributed,
    load_weights,
    make_worker,
    plain_copy,
)
from edgeclf.train.evaluate import evaluate_source, write_eval_artifacts
from edgeclf.train.fit import FitPlan, fit
from edgeclf.train.progressive import resize_layer

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        model_dir: the model directory written.
        metrics: the test metrics, as in metrics.json.
        interrupted: the run stopped early (Ctrl-C); the model holds the best weights so far.
        checkpoint: the kept run checkpoint to ``resume`` from (interrupted runs), else None.
        is_chief: False for a non-chief worker of a distributed run, which wrote nothing (the chief
            wrote ``model_dir``).
    """

    model_dir: Path
    metrics: dict
    interrupted: bool = False
    checkpoint: Path | None = None
    is_chief: bool = True


def _history_csv(history: list[dict]) -> str:
    keys = sorted({k for row in history for k in row})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    return buf.getvalue()


def _float32_copy(model: keras.Model, cfg: TrainConfig, input_shape, num_classes, tmp: Path) -> keras.Model:
    """Rebuild ``model`` under the float32 policy and copy the weights (for mixed-precision runs).

    Through a ``.weights.h5`` file, which matches variables by layer structure (``get_weights`` order
    depends on which layers are trainable, and differs after two-phase fine-tuning)."""
    keras.mixed_precision.set_global_policy("float32")
    m32 = build_model(cfg.model.__class__(**{**cfg.model.to_dict(), "weights": "none"}), input_shape, num_classes)
    path = tmp / "float32.weights.h5"
    model.save_weights(str(path))
    m32.load_weights(str(path))
    path.unlink()
    return m32


def _machine_record(sessions: list[dict]) -> dict:
    """machine.json of a model directory: bench's machine.json fields for the session that finished the
    run (``threads`` None: TensorFlow's default thread pools), its ``load_average_end``, and
    ``earlier_sessions`` (the same facts of every session before a ``--resume``; empty otherwise), so
    train_seconds and images/s can be read against the CPU(s) that produced them."""
    return {**sessions[-1], "load_average_end": load_average(), "earlier_sessions": sessions[:-1]}


def resolve_input_size(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the training/model input size chosen when ``cfg.data.image_size`` is None.

    The images' native size unless the model needs less: ``ModelSpec.default_input_size`` (e.g.
    ``cnn``: at most 64 px on the longer side; transfer models: their ``img_size``). A reduced size
    is written into ``cfg.data.image_size`` (so config.json records it) and logged as one line,
    e.g. ``input size 64x64 (images are 400x400; --input-size to override)``; image folders at
    their own size are logged too. An explicit ``image_size`` is kept as it is.

    Raises:
        edgeclf.errors.DataError: the data is missing or its sampled images can't be decoded.
    """
    if cfg.data.image_size is not None:
        return cfg
    native = native_size(cfg.data)
    size = tuple(get_spec(cfg.model.name).default_input_size(cfg.model, native))
    if size != tuple(native):
        log.info("input size %dx%d (images are %dx%d; --input-size to override)", *size, *native)
        return cfg.with_(data=replace(cfg.data, image_size=size))
    if cfg.data.source not in BUILTIN:
        log.info("input size %dx%d (the images' size)", *size)
    return cfg


def _phases(cfg: TrainConfig, spec) -> list[tuple[str, int, float, int | None]]:
    """(name, epochs, peak lr, trainable base layers or None) per phase."""
    if not spec.two_phase:
        return [("train", cfg.epochs, cfg.lr, None)]
    phases = []
    if cfg.head_epochs:
        phases.append(("head", cfg.head_epochs, cfg.lr, 0))
    if cfg.epochs:
        phases.append(("fine-tune", cfg.epochs, cfg.fine_tune_lr, cfg.fine_tune_layers))
    return phases


def train(cfg: TrainConfig, progress: bool = True,
          extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``, evaluate on the test split, write the model directory.

    Two-phase transfer learning for models whose spec says so (``mobilenet_v2``): ``head_epochs``
    with the base frozen at ``lr``, then ``epochs`` with the last ``fine_tune_layers`` base layers
    trainable at ``fine_tune_lr`` (BatchNorm frozen throughout). With ``cfg.distill`` the loss
    includes the teacher's soft targets (:mod:`edgeclf.train.distill`). The input size is chosen by
    :func:`resolve_input_size` when ``cfg.data.image_size`` is None.

    After every epoch the run checkpoint ``out/.name.partial/`` is updated, so an interrupted or
    crashed run (Ctrl-C, an error, even SIGKILL) can be continued with :func:`resume`. Ctrl-C
    stops training cleanly: the best weights so far are evaluated and saved, and the checkpoint is
    kept. A finished run deletes its checkpoint.

    Args:
        cfg: the training configuration.
        progress: show progress bars while decoding image folders and computing cached teacher outputs.
        extra_callbacks: Keras callbacks run after edgeclf's own (checkpoint, history, early
            stopping) in every phase, e.g. for logging; one raising ``KeyboardInterrupt`` behaves
            like Ctrl-C.

    Returns:
        TrainResult with the model directory ``Path(cfg.out) / cfg.run_name`` and test metrics.

    Raises:
        edgeclf.errors.DataError: bad data. edgeclf.errors.ConfigError: bad configuration, a bad
            teacher, or an unfinished run already checkpointed under the same name.
        edgeclf.errors.WeightsError: pretrained weights not loadable.
        KeyboardInterrupt: interrupted before the first epoch finished (nothing is kept).
    """
    get_spec(cfg.model.name).validate_weights(cfg.model.weights)  # before spending minutes on the data
    worker = make_worker(cfg.distribute, cfg.batch_size)  # before any other TF op (MultiWorkerMirroredStrategy)
    cfg = resolve_input_size(cfg)
    out_dir = Path(cfg.out) / cfg.run_name
    if not worker.is_chief:
        return _run_non_chief(cfg, worker, out_dir, progress, extra_callbacks)
    return _run(cfg, _chief_checkpoint(cfg, out_dir), progress, extra_callbacks, worker)


def _chief_checkpoint(cfg: TrainConfig, out_dir: Path) -> RunCheckpoint:
    """A new run checkpoint; for ``multi-worker``, the unfinished checkpoint of the same configuration
    if there is one (a restarted cluster rejoins its run: BackupAndRestore restores the epoch)."""
    path = checkpoint_dir(out_dir)
    if cfg.distribute is Distribute.MULTI_WORKER and (path / "state.json").is_file():
        if load_config(path).to_dict() == cfg.to_dict():
            ckpt, _ = RunCheckpoint.open(path)
            log.info("rejoining the unfinished run in %s (%d epoch(s) done)", path, len(ckpt.state["history"]))
            return ckpt
    return RunCheckpoint.create(out_dir, cfg)


def _run_non_chief(cfg: TrainConfig, worker: Worker, out_dir: Path, progress: bool,
                   extra_callbacks: Sequence[keras.callbacks.Callback]) -> TrainResult:
    """A non-chief worker: the same steps as the chief, every file into a temporary directory that is
    deleted at the end; the backups are read from the chief's shared checkpoint."""
    tmp = Path(tempfile.mkdtemp(prefix=f"edgeclf-{worker.task.replace(' ', '-')}-"))
    try:
        ckpt = RunCheckpoint.create(tmp / cfg.run_name, cfg)
        follow_chief(ckpt, checkpoint_dir(out_dir))
        result = _run(cfg, ckpt, progress, extra_callbacks, worker, backup_root=checkpoint_dir(out_dir))
        return replace(result, model_dir=out_dir, checkpoint=None, is_chief=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resume(path: str | Path, progress: bool = True,
           extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Continue an interrupted run from its last finished epoch (``edgeclf train --resume``).

    The configuration, the history, the finished phases, the best weights, and the model and
    optimizer state of the last finished epoch (so the learning-rate schedule continues where it
    was) come from the checkpoint; the model directory is the one beside it. Epochs after the
    resume see another shuffle/augmentation order than an uninterrupted run would, so results
    match it in expectation, not bit for bit.

    Args:
        path: the model directory ``OUT/NAME`` (whose checkpoint is ``OUT/.NAME.partial``) or the
            checkpoint directory itself.
        progress, extra_callbacks: as for :func:`train`.

    Returns / Raises: as :func:`train`; ConfigError also when there is no checkpoint at ``path``.
    """
    ckpt_path = find_checkpoint(path)
    ckpt, cfg = RunCheckpoint.open(ckpt_path)
    try:
        get_spec(cfg.model.name).validate_weights(cfg.model.weights)
    except BaseException:
        ckpt.abandon()
        raise
    log.info("resuming %s after epoch %d (%s)", model_dir_of(ckpt_path), len(ckpt.state["history"]), ckpt_path)
    if cfg.distribute is Distribute.MULTI_WORKER:
        ckpt.abandon()
        raise ConfigError(f"{ckpt_path}: a --distribute {cfg.distribute.value} run continues by running the same "
                          "edgeclf train command again (it rejoins its checkpoint), not with --resume")
    return _run(cfg, ckpt, progress, extra_callbacks, make_worker(cfg.distribute, cfg.batch_size))


def _train_phases(cfg, spec, model, ds, ckpt: RunCheckpoint, teacher, class_weight, extra_callbacks,
                  backup_root: Path) -> None:
    """Run the phases not finished yet, checkpointing after every epoch and at every phase end."""
    phases = _phases(cfg, spec)
    done = int(ckpt.state["phases_done"])
    planned = ckpt.state.setdefault("planned_epochs", {})  # phase -> epochs, when a time budget shortened it
    if done:
        load_weights(model, ckpt.phase_weights(done - 1))
    for i, (phase, epochs, lr, layers) in enumerate(phases):
        if i < done:
            continue
        recipe_epochs, epochs = epochs, int(planned.get(phase, epochs))  # a time budget may have shortened it
        if layers is not None:
            n = spec.make_base_trainable(model, layers, cfg.train_bn)
            log.info("phase %s: %d epochs, lr %g, %d trainable base layers", phase, epochs, lr, n)
            if layers and cfg.model.bn_batch_stats:  # (a resumed phase's backup then restores its own)
                _recalibrate_batchnorm(model, ds.train, cfg.seed)
        rows = [r for r in ckpt.state["history"] if r["phase"] == phase]
        if cfg.patience and early_stop(rows, cfg.patience):  # stopped early, killed before the phase end was saved
            load_weights(model, ckpt.best_path)
            ckpt.finish_phase(model, i)
            continue
        last = i == len(phases) - 1
        state = EpochState(ckpt, phase, cfg.patience)
        backup = keras.callbacks.BackupAndRestore(str(backup_root / ckpt.backup_dir(i).name), delete_checkpoint=False)
        plan = FitPlan(optimizer=cfg.optimizer, lr=lr, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
                       label_smoothing=cfg.label_smoothing, warmup_fraction=cfg.warmup_fraction,
                       augment=cfg.augment, seed=cfg.seed, teacher=teacher, mixup_alpha=cfg.mixup_alpha,
                       # EMA in the last phase only: averaged over a 1-epoch head phase, the head would
                       # stay mostly at its random start (0.9995 ** 782 = 0.68)
                       ema_decay=cfg.ema_decay if last else 0.0,
                       progressive_size=(cfg.progressive_size or 0) if last else 0,
                       progressive_fraction=cfg.progressive_fraction)
        budget = None
        if cfg.time_budget_hours and last:
            budget = TimeBudget(cfg.time_budget_hours * 3600, float(ckpt.state["train_seconds"]),
                                on_replan=lambda n, phase=phase: planned.__setitem__(phase, n), planned=epochs)
            if len(rows) < epochs:  # fit up to the recipe's epochs: the budget runs the plan and may grow it back
                epochs = recipe_epochs
        fit(model, ds.train, ds.num_classes, plan, epochs, [state, backup, *extra_callbacks],
            validation=ds.val, class_weight=class_weight, budget=budget)
        if state.stopped:  # as EarlyStopping(restore_best_weights=True)
            load_weights(model, ckpt.best_path)
        ckpt.finish_phase(model, i)


#: Training images whose BatchNorm input statistics start a ``--bn-batch-stats`` phase.
BN_CALIBRATION_IMAGES = 2048


def _recalibrate_batchnorm(model, train, seed: int) -> None:
    """Moving statistics of the base's BatchNorm layers from un-augmented training images, output unchanged
    (:mod:`edgeclf.models.bn_calibration`), before a phase that trains with batch statistics."""
    from edgeclf.models.bn_calibration import recalibrate_batchnorm

    n = recalibrate_batchnorm(model, source_batches(train, 64, True, None, seed), BN_CALIBRATION_IMAGES)
    log.info("BatchNorm: %d layers recalibrated on %d training images; this phase normalises with batch "
             "statistics (--bn-batch-stats)", n, min(BN_CALIBRATION_IMAGES, len(train)))


#: Un-augmented training images a model's ``data_init`` step sees (airbench94 whitens from 5,000).
DATA_INIT_IMAGES = 5000


def _init_from_data(spec, model, train, seed: int) -> None:
    """The spec's ``data_init`` step (e.g. the ``cnn``'s whitening stem) on a stratified subset of up to
    :data:`DATA_INIT_IMAGES` un-augmented training images; nothing for specs without one."""
    if not spec.data_init:
        return
    line = spec.init_from_data(model, train.sample(DATA_INIT_IMAGES, seed)[0])
    if line:
        log.info("%s", line)


def _run(cfg: TrainConfig, ckpt: RunCheckpoint, progress: bool, extra_callbacks: Sequence[keras.callbacks.Callback],
         worker: Worker, backup_root: Path | None = None) -> TrainResult:
    """Train (or continue) ``cfg`` from ``ckpt``'s state, then evaluate and write the model directory.

    ``backup_root``: where BackupAndRestore keeps its backups (default ``ckpt.path``; a non-chief
    worker reads the chief's)."""
    out_dir = ckpt.model_dir
    try:
        spec = get_spec(cfg.model.name)
        set_seed(cfg.seed)
        ds = open_dataset(cfg.data, channels=3, progress=progress, cache_dir=worker.cache_dir(cfg.data.cache))
        log.info("%s", ds.summary())
        teacher = load_teacher(cfg.distill, ds.input_shape, ds.class_names, progress) if cfg.distill else None
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if cfg.mixed_precision else "float32")
        log.info("precision: %s (--mixed-precision/--no-mixed-precision to choose)",
                 "mixed_bfloat16" if cfg.mixed_precision else "float32")
        with worker.strategy.scope():
            model = build_model(cfg.model, ds.input_shape, ds.num_classes)
        if cfg.progressive_size:
            resize_layer(model)  # ConfigError now, not after the first phase
    except BaseException:
        ckpt.abandon()
        raise
    if not ckpt.state["history"]:  # a resumed run restores these weights from its checkpoint
        _init_from_data(spec, model, ds.train, cfg.seed)
    class_weight = (balanced_class_weights(ds.train.labels, ds.num_classes)
                    if cfg.class_weight is ClassWeight.BALANCED else None)
    ckpt.state.setdefault("machines", []).append(machine_facts())  # one per session: a resume may run elsewhere
    interrupted = False
    try:
        _train_phases(cfg, spec, model, ds, ckpt, teacher, class_weight, extra_callbacks, backup_root or ckpt.path)
    except KeyboardInterrupt:
        if not ckpt.has_best:
            ckpt.abandon()
            raise
        interrupted = True
        log.warning("interrupted: keeping the best weights so far (val top-1 %.4f)", ckpt.state["best_acc"])
    except BaseException:
        if ckpt.state["history"]:
            log.error("training failed; the checkpoint of epoch %d is kept: continue with "
                      "edgeclf train --resume %s", len(ckpt.state["history"]), out_dir)
        ckpt.abandon()
        raise
    history = ckpt.state["history"]
    if spec.two_phase and cfg.train_bn and cfg.epochs:  # BatchNorm frozen again: export flattens the base
        spec.make_base_trainable(model, cfg.fine_tune_layers)
    if is_distributed(model):  # evaluate and save a plain model (all workers at once: the reads are collective)
        model = plain_copy(model)
    if ckpt.has_best and (interrupted or len(ds.val)):
        load_weights(model, ckpt.best_path)

    work = make_temp_dir(out_dir, "new")  # .<name>.new-XXXX beside out_dir, mode 0o777 & ~umask (not mkdtemp's 0700)
    try:
        if cfg.mixed_precision:
            model = _float32_copy(model, cfg, ds.input_shape, ds.num_classes, work)
        metrics, predictions = evaluate_source(model, ds.test, ds.class_names)
        best = ckpt.state["best_acc"]
        metrics.update({
            "model": cfg.model.name, "dataset": ds.name, "test_split": ds.test_split_name,
            "n_train": len(ds.train), "n_val": len(ds.val),
            # without a validation split the checkpoint ranks epochs by training top-1: not a validation number
            "best_val_top1_acc": round(float(best), 4) if best is not None and len(ds.val) else None,
            "train_seconds": round(float(ckpt.state["train_seconds"]), 1), "epochs_run": len(history),
            "interrupted": interrupted, "resumed": int(ckpt.state["sessions"]) - 1,
            "time_budget_hours": cfg.time_budget_hours,
            "epochs_planned": dict(ckpt.state.get("planned_epochs", {})) or None,
            "teacher": list(cfg.distill.teacher) if cfg.distill else None,
            "params": int(model.count_params()), "macs_per_image": count_macs(model),
            "flops_per_image": 2 * count_macs(model), "input_shape": list(ds.input_shape),
            "versions": {"edgeclf": __version__, **tool_versions()},
        })
        with reported_as(out_dir, work):
            save_keras_model(model, work / "model.keras")
            write_json(work / "config.json", cfg.to_dict())
            write_text(work / "labels.txt", "\n".join(ds.class_names) + "\n")
            write_text(work / "history.csv", _history_csv(history))
            write_json(work / "machine.json", _machine_record(ckpt.state["machines"]))
            write_eval_artifacts(work, metrics, history, predictions)
        replace_dir(work, out_dir)
    except BaseException:
        ckpt.close()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if interrupted:
        ckpt.close()
        log.warning("checkpoint of epoch %d kept in %s: continue with edgeclf train --resume %s",
                    len(history), ckpt.path, out_dir)
    else:
        ckpt.remove()
    log.info("test top-1 %.4f (%d images) -> %s", metrics["top1_acc"], metrics["n_test"],
             out_dir if worker.is_chief else f"{worker.task} done (its files deleted; the chief writes the model)")
    return TrainResult(out_dir, metrics, interrupted, ckpt.path if interrupted else None)

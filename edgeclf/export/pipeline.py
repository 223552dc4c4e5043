"""``export_model(model_dir, cfg) -> ExportResult``: prune, quantize, export, validate, write the manifest.

Steps (one log line each, with timing):

1. load ``model.keras``, ``config.json`` and the data; float top-1 on the test images;
2. optionally prune (:mod:`.prune`) and QAT (:mod:`.qat`);
3. for each (format, precision) from the registry (:mod:`.registry`): write the file to a temporary
   name, check it (ONNX checker, int8 weight tensors), validate it on the runtime (:mod:`.validate`),
   apply the accuracy gate, rename it into place and add its manifest entry. A failing artifact
   leaves neither a file nor a manifest entry (unless ``allow_drop``: kept, status "validation failed").
   A converter that raises on the model (TFLite converter, tf2onnx, onnxruntime ``quantize_static``,
   the QuantizationDebugger: e.g. an op it does not support) fails that artifact the same way, as an
   :class:`ExportError` naming ``MODEL_DIR/<file>`` and the cause; the export goes on with the others.
4. ``--auto-qat`` (:attr:`ExportConfig.qat_if_gate_fails`): if post-training int8 files failed the gate,
   or passed it but lost more than ``--auto-qat-above`` points (:attr:`ExportConfig.auto_qat_above_pp`),
   QAT once and make those files again from the QAT model (``model_qat_int8.*``); of a passing pair
   the file with the smaller drop stays.

Raises :class:`ExportError` at the end if any artifact could not be made, else :class:`AccuracyGateError`
if any failed the gate (the others are kept in both cases; ``.result`` holds the partial result).
TensorFlow is imported inside :func:`export_model` only.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgeclf.errors import AccuracyGateError, EdgeclfError, ExportError, ModelLoadError, one_line
from edgeclf.export.config import ExportConfig, ExportJob, Format, Precision
from edgeclf.runtime.manifest import (
    MANIFEST_NAME,
    ArtifactEntry,
    ArtifactStatus,
    FallbackCost,
    InputSpec,
    Manifest,
    QuantParams,
    Validation,
    read_manifest,
    write_manifest,
)

log = logging.getLogger(__name__)
EXPORT_CONFIG_NAME = "export_config.json"   # the resolved ExportConfig and the pruning report of the last export


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes:
        model_dir: the model directory; manifest_path: its manifest.json.
        float_top1_acc: top-1 fraction of the float Keras model on the ``n_images`` validation images.
        artifacts: the manifest entries written by this export, in export order.
        failures: file name -> one-line reason, for artifacts that failed the accuracy gate (no file
            and no manifest entry was written for them).
        export_errors: file name -> one-line reason, for artifacts that could not be made (a converter
            raised, or an int8 file came out without int8 weights); no file and no entry either.
        sparsity: the pruning report (``PruneReport.to_dict()``), or None without ``--prune``.
        fine_tune_lr: {"prune": peak lr, "qat": peak lr} of the fine-tunes that ran (empty without).
        timings_s: export step -> wall time in seconds (load, prune, QAT, each artifact).
        fp32_size_bytes: format value -> size of the model directory's fp32 file of that format (from
            this or an earlier export, per the manifest), the reference of :meth:`gzip_ratio`.
        auto_qat: post-training int8 file -> its gate failure, for each file that ``--auto-qat``
            (:attr:`ExportConfig.qat_if_gate_fails`) replaced by a QAT file that passed.
        auto_qat_above: post-training int8 file that passed the gate but lost more than
            :attr:`ExportConfig.auto_qat_above_pp` points -> one line saying both drops and which file
            was kept (the other was deleted).
    """

    model_dir: Path
    manifest_path: Path
    float_top1_acc: float
    n_images: int
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    export_errors: dict[str, str] = field(default_factory=dict)
    sparsity: dict | None = None
    fine_tune_lr: dict[str, float] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    fp32_size_bytes: dict[str, int] = field(default_factory=dict)
    auto_qat: dict[str, str] = field(default_factory=dict)
    auto_qat_above: dict[str, str] = field(default_factory=dict)

    def gzip_ratio(self, entry: ArtifactEntry) -> float | None:
        """gzip -9 size of ``entry``'s file / size of the fp32 file of its format (issue target for
        pruned int8: <= 0.10); None when there is no fp32 file of that format or no gzip size."""
        ref = self.fp32_size_bytes.get(entry.format.value)
        return round(entry.size_gzip_bytes / ref, 4) if ref and entry.size_gzip_bytes else None


@dataclass(frozen=True)
class ArtifactContext:
    """What every artifact of one export is written into and checked against.

    Attributes:
        model_dir: where the artifact files go.
        x_val: float32 (N, H, W, C) RGB/grey [0, 255] validation images.
        y_val: int (N,) their class indices.
        float_probs: float32 (N, num_classes) of the float Keras model on ``x_val``.
        float_top1_acc: the float model's top-1 fraction on ``x_val``.
        sparsity: fraction of zero Conv/Dense kernel weights of the model being exported.
        progress: tqdm bars during validation.
        timings: step name -> seconds, filled in as artifacts are made.
    """

    model_dir: Path
    x_val: np.ndarray
    y_val: np.ndarray
    float_probs: np.ndarray
    float_top1_acc: float
    sparsity: float
    progress: bool
    timings: dict = field(default_factory=dict)


@contextmanager
def _step(name: str, timings: dict | None = None):
    """Log ``name`` and its wall time; with ``timings``, also record it there (seconds, 0.1 s)."""
    t0 = time.perf_counter()
    log.info("[export] %s ...", name)
    yield
    dt = time.perf_counter() - t0
    log.info("[export] %s done in %.1f s", name, dt)
    if timings is not None:
        timings[name] = round(dt, 1)


def _qat_teacher(float_model, alpha: float, model_dir: Path):
    """The :class:`edgeclf.train.distill.Teacher` of ``--qat-distill`` (None when ``alpha`` is 0): the
    float model itself, temperature 1, its outputs computed on every augmented fine-tuning batch.

    Why distil: the export gate and the top-1 agreement compare the int8 file with the float model,
    so the float model's full output distribution is a better QAT target than the labels (which the
    float model itself gets wrong on ~8 % of CIFAR-10 test images). Self-distillation in QAT:
    Mishra & Marr (2018), "Apprentice", arXiv:1711.05852; Hinton et al. (2015) for the loss.
    """
    if not alpha:
        return None
    from edgeclf.train.config import TeacherTargets
    from edgeclf.train.distill import Teacher

    return Teacher(float_model, alpha, 1.0, TeacherTargets.PER_BATCH, str(model_dir))


def _calibration_source(train, cfg: ExportConfig):
    """``train`` itself for stratified calibration; for ``calibration_sampling="random"`` a copy whose
    labels are all 0, so its stratified ``sample`` is a uniform random subset of the same images."""
    if cfg.calibration_sampling == "stratified":
        return train
    return replace(train, labels=np.zeros(len(train), dtype=np.int32))


_MLIR_ERROR = re.compile(r"error: (.+)")
_CAUSE_CHARS = 300


def _cause(exc: BaseException) -> str:
    """A short cause: the converter's first MLIR ``error: ...`` line (the TFLite converter's message
    starts with a long location dump), else the first line of the message; with the exception type."""
    m = _MLIR_ERROR.search(str(exc))
    text = m.group(1).strip() if m else one_line(exc)
    return f"{type(exc).__name__}: {text}"[:_CAUSE_CHARS]


@contextmanager
def _tool_step(path: Path, what: str):
    """Turn a third-party converter's exception into ``ExportError("<path>: <what> failed: <cause>")``.

    The converters raise many types (ConverterError, ValueError, KeyError, onnx ValidationError, ...)
    for a model they cannot handle. EdgeclfError, OSError (disk, permissions) and ImportError (a
    missing optional package: its pip line) pass through unchanged, as do KeyboardInterrupt and
    other BaseExceptions.
    """
    try:
        yield
    except (EdgeclfError, OSError, ImportError):
        raise
    except Exception as exc:  # the converters raise many types
        raise ExportError(f"{path}: {what} failed ({_cause(exc)})") from exc


def _manifest(model_dir: Path, input_shape: tuple, model_name: str, class_names: list[str],
              dataset: str) -> Manifest:
    """A new manifest for ``model_dir``, keeping the earlier entries whose files still exist when the
    input spec and labels are unchanged.

    Raises:
        ManifestError: an existing manifest.json is unreadable or from a newer edgeclf (it is never
            overwritten silently).
    """
    h, w, c = (int(d) for d in input_shape[1:4])
    spec = InputSpec(height=h, width=w, channels=c, color_order="GRAY" if c == 1 else "RGB")
    new = Manifest(name=model_dir.name, input=spec, labels=list(class_names), model=model_name, dataset=dataset)
    if not (model_dir / MANIFEST_NAME).is_file():
        return new
    old = read_manifest(model_dir)
    if old.input == spec and old.labels == new.labels:
        new.artifacts = [a for a in old.artifacts if (model_dir / a.file).is_file()]
    return new


def _quant_params(tensor) -> QuantParams | None:
    """QuantParams of an int8/uint8 :class:`~edgeclf.runtime.base.TensorInfo`, None for a float tensor."""
    if not tensor.quantized:
        return None
    return QuantParams(dtype=str(tensor.dtype), scale=tensor.scale, zero_point=tensor.zero_point)


def _quantizer(fmt: Format, job: ExportJob) -> str | None:
    """The tool chain that made an int8 file (see :attr:`ArtifactEntry.quantizer`), None otherwise."""
    if job.precision is not Precision.INT8:
        return None
    if job.quantization_aware:
        return "qat+converter" + ("+tf2onnx" if fmt is Format.ONNX else "")
    if fmt is Format.ONNX:
        from edgeclf.export.config import resolved_onnx_recipe

        return resolved_onnx_recipe(job.config).value
    return job.config.tflite_int8.value


def _fallback(model, fmt: Format, job: ExportJob, ctx: ArtifactContext, tmp: Path, v_int8: Validation,
              ranked: list[str]) -> tuple[Validation, tuple[str, ...], FallbackCost | None]:
    """Re-make ``tmp`` with the most sensitive ``ranked`` layers in float until the gate passes or the
    limit is reached (:mod:`edgeclf.export.fallback`); -> (validation, float layers, cost) of the file
    left at ``tmp``: the first attempt within the budget, else the best attempt or the all-int8 file.

    Each new best file is copied aside while it is written (``keep``) and the last copy is written
    back at the end (see :func:`edgeclf.export.fallback.search` for why copies, not a re-make)."""
    from edgeclf.export import fallback, registry, validate

    image = ctx.x_val[:1]
    size_int8, latency_int8 = tmp.stat().st_size, fallback.p50_latency_ms(tmp, image)

    def attempt(layers: tuple[str, ...]) -> Validation:
        registry.exporter(fmt, job.precision)(model, tmp, replace(job, float_layers=layers))
        return validate.validate_file(tmp, ctx.x_val, ctx.y_val, ctx.float_probs, ctx.float_top1_acc, ctx.progress)

    with tempfile.TemporaryDirectory(prefix="edgeclf-fallback-") as side:
        copy, kept = Path(side) / tmp.name, []

        def keep(layers: tuple[str, ...]) -> None:
            shutil.copyfile(tmp, copy)
            kept[:] = [layers]

        out = fallback.search(ranked, attempt, job.config.max_accuracy_drop_pp, job.config.fallback_max_layers,
                              int8=v_int8, ranking=job.config.fallback_ranking, keep=keep)
        if out is None:
            return v_int8, (), None
        if kept != [out.float_layers]:   # search's contract: the last keep() names the kept file
            raise RuntimeError(f"fallback kept {out.float_layers} but the last copy is of {kept}")
        shutil.copyfile(copy, tmp)
    return out.validation, out.float_layers, fallback.cost(v_int8, size_int8, latency_int8, tmp, image, out)


def _export_one(model, fmt: Format, job: ExportJob, ctx: ArtifactContext) -> tuple[ArtifactEntry, str | None]:
    """Write, check and validate one artifact; returns its entry and the gate failure message (or None).

    int8 only: ``--quant-report`` writes the per-layer report beside it (also when the artifact then
    fails the gate); ``--fallback`` re-makes a failing file with its most sensitive layers in float.

    Raises:
        ExportError: a converter raised on the model (names ``MODEL_DIR/<file>``, the step and the
            cause), or an int8 file without int8 weight tensors; no file was left behind.
        AccuracyGateError: the gate failed and ``allow_drop`` is off (no file was left behind).
    """
    from edgeclf._io import atomic_path, gzip_size, sha256_file
    from edgeclf._versions import tool_versions
    from edgeclf.export import artifacts, quant_report, registry, validate
    from edgeclf.runtime import load_classifier
    from edgeclf.runtime.cpu import cpu_features

    cfg, precision = job.config, job.precision
    name = cfg.file_name(fmt, precision)
    cpu = cpu_features()
    job = replace(job, metadata={**job.metadata, "validated_on": cpu.to_dict()})
    errors, float_layers, fallback_cost = [], (), None
    target = ctx.model_dir / name
    with _step(f"{name}: convert + validate", ctx.timings), atomic_path(target) as tmp:
        with _tool_step(target, f"{fmt.value} {precision.value} conversion"):
            registry.exporter(fmt, precision)(model, tmp, job)
        v = validate.validate_file(tmp, ctx.x_val, ctx.y_val, ctx.float_probs, ctx.float_top1_acc, ctx.progress)
        failure = validate.gate_message(name, v, cfg.max_accuracy_drop_pp)
        wants_fallback = failure is not None and cfg.fallback and precision is Precision.INT8
        if precision is Precision.INT8 and (cfg.quant_report or wants_fallback):
            with _step(f"{name}: per-layer quantization error"), _tool_step(target, "per-layer quantization error"):
                errors = quant_report.layer_errors(model, fmt, job)
            if cfg.quant_report:
                quant_report.write_report(ctx.model_dir, name, errors)
        if wants_fallback:
            ranked = list(dict.fromkeys(e.layer for e in quant_report.worst_layers(errors, None)))
            with _step(f"{name}: accuracy-aware fallback (at most {cfg.fallback_max_layers} float layers, "
                       f"{cfg.fallback_ranking} ranking)"), \
                    _tool_step(target, "fallback conversion"):
                v, float_layers, fallback_cost = _fallback(model, fmt, job, ctx, tmp, v, ranked)
            failure = validate.gate_message(name, v, cfg.max_accuracy_drop_pp)
        weights = artifacts.int8_weight_report(tmp)
        if precision is Precision.INT8 and weights.int8_kernel_params == 0:
            raise ExportError(f"{target}: the int8 export contains no int8 weight tensors")
        clf = load_classifier(tmp)
        quant_in, quant_out = _quant_params(clf.input_tensor), _quant_params(clf.output_tensor)
        clf.close()
        entry = ArtifactEntry(
            file=name, format=fmt, precision=precision, sparsity=ctx.sparsity,
            quantization_aware=job.quantization_aware, quantizer=_quantizer(fmt, job),
            sha256=sha256_file(tmp), size_bytes=tmp.stat().st_size, size_gzip_bytes=gzip_size(tmp),
            input_quantization=quant_in, output_quantization=quant_out, int8_weights=weights, validation=v,
            status=ArtifactStatus.OK if failure is None else ArtifactStatus.VALIDATION_FAILED,
            tools=tool_versions(), created=artifacts.utc_now(), validated_on=cpu, float_layers=list(float_layers),
            fallback=fallback_cost, worst_layers=quant_report.worst_layers(errors))
        if failure is not None and not cfg.allow_drop:
            raise AccuracyGateError(failure)
    if failure is not None:
        log.warning("%s", failure)
    return entry, failure


@dataclass
class _JobRunner:
    """Makes one artifact per call and files the outcome: manifest entry, failure or export error."""

    ctx: ArtifactContext
    manifest: Manifest
    result: ExportResult
    representative: np.ndarray
    sparsity: float

    def __call__(self, model, fmt: Format, precision: Precision, cfg: ExportConfig, use_qat: bool) -> bool:
        """Export ``model`` as (fmt, precision) under ``cfg``; True when its entry was written."""
        job = ExportJob(precision=precision, config=cfg, representative=self.representative,
                        metadata=self.manifest.embedded_metadata(precision, self.sparsity), quantization_aware=use_qat)
        try:
            entry, _ = _export_one(model, fmt, job, self.ctx)
        except AccuracyGateError as exc:
            self.result.failures[cfg.file_name(fmt, precision)] = str(exc)
            return False
        except ExportError as exc:
            log.error("%s", exc)
            self.result.export_errors[cfg.file_name(fmt, precision)] = one_line(exc)
            return False
        self.manifest.upsert_artifact(entry)
        self.result.artifacts.append(entry)
        write_manifest(self.ctx.model_dir, self.manifest)
        return True


def _above_target(result: ExportResult, cfg: ExportConfig, name: str) -> ArtifactEntry | None:
    """The entry *this* export wrote for the post-training file ``name`` (never one an earlier export
    left in the manifest) when ``cfg.auto_qat_above_pp`` is set and it passed the gate but lost more
    than that many points; else None."""
    entry = next((a for a in result.artifacts if a.file == name), None)
    over = (cfg.auto_qat_above_pp is not None and entry is not None and entry.status is ArtifactStatus.OK
            and entry.validation is not None and entry.validation.acc_drop_pp > cfg.auto_qat_above_pp)
    return entry if over else None


def _keep_better(model_dir: Path, manifest: Manifest, result: ExportResult, ptq: ArtifactEntry,
                 qat: ArtifactEntry | None, why_not: str | None = None) -> str:
    """Of a passing post-training int8 file and its QAT remake (None: the remake failed the gate or
    could not be made, ``why_not`` says why), keep the one with the smaller accuracy drop (ties: the
    post-training file); the other is dropped from the manifest (written first) and deleted.
    -> one line saying what happened."""
    said = f"{ptq.file} lost {ptq.validation.acc_drop_pp:+.2f} points"
    if qat is None:
        return f"{said}; its QAT remake did not pass ({why_not}): kept {ptq.file}"
    keep, drop = (qat, ptq) if qat.validation.acc_drop_pp < ptq.validation.acc_drop_pp else (ptq, qat)
    manifest.artifacts = [a for a in manifest.artifacts if a.file != drop.file]
    result.artifacts = [a for a in result.artifacts if a.file != drop.file]
    write_manifest(model_dir, manifest)
    (model_dir / drop.file).unlink(missing_ok=True)
    return f"{said}, {qat.file} {qat.validation.acc_drop_pp:+.2f}: kept {keep.file}"


def export_model(model_dir: str | Path, cfg: ExportConfig, progress: bool = True) -> ExportResult:
    """Export ``model_dir``'s float model to every (format, precision) of ``cfg`` and validate each file.

    Args:
        model_dir: a directory from ``edgeclf train`` (model.keras, config.json).
        cfg: what to make; see :class:`ExportConfig`.
        progress: tqdm bars during validation.

    Returns:
        ExportResult; MODEL_DIR/manifest.json lists every artifact written (earlier entries whose
        files still exist are kept).

    Raises:
        ModelLoadError: ``model_dir`` is not a directory. FileNotFoundError / ConfigError: no or
            a malformed config.json or model.keras.
        ManifestError: the existing manifest.json is unreadable or from a newer edgeclf.
        edgeclf.data.DataError: the data can't be loaded (a directory config.json names is missing),
            or its number of classes differs from the model's.
        ExportError: an artifact could not be made (a converter raised on the model, or an int8 file
            came out without int8 weights); the others were made, validated and listed
            (``.result``). Raised before AccuracyGateError when both happen.
        AccuracyGateError: an artifact dropped more than ``cfg.max_accuracy_drop_pp`` points (and
            ``allow_drop`` is False); its file and entry were not written, the others were.
    """
    from edgeclf._io import write_json
    from edgeclf._keras import set_seed
    from edgeclf.data import open_dataset
    from edgeclf.data.dataset import representative_images
    from edgeclf.export.prune import FineTune, qat_epochs_for, qat_lr, rewound_lr
    from edgeclf.export.quantize import saved_model_cache
    from edgeclf.metrics import top1_accuracy
    from edgeclf.models.io import load_keras_model
    from edgeclf.train.config import check_num_classes, load_config, saved_data_config

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: not a directory (expected an edgeclf model directory)")
    jobs = cfg.jobs()
    set_seed(cfg.seed)
    timings: dict[str, float] = {}
    with _step("load model and data", timings):
        train_cfg = load_config(model_dir)
        if cfg.qat_epochs is None:  # per model: 2 after --train-bn fine-tuning, else 1
            cfg = replace(cfg, qat_epochs=qat_epochs_for(train_cfg))
        model = load_keras_model(model_dir)
        dcfg = saved_data_config(model_dir, train_cfg, cfg.data)
        ds = open_dataset(dcfg, channels=int(model.input_shape[-1]), progress=progress)  # in memory or streamed
        check_num_classes(model_dir / "model.keras", int(model.output_shape[-1]), dcfg.source, ds.class_names)
        x_val, y_val = ds.test.sample(cfg.val_samples, cfg.seed)
        x_val = x_val.astype(np.float32)
        float_probs = model.predict(x_val, batch_size=256, verbose=0)
        float_acc = top1_accuracy(float_probs, y_val)
        rep = representative_images(*_calibration_source(ds.train, cfg).sample(cfg.calibration_samples, cfg.seed),
                                    cfg.calibration_samples, cfg.seed)
    log.info("[export] float model: top-1 %.4f on %d test images; %d calibration images", float_acc, len(y_val),
             len(rep))
    manifest = _manifest(model_dir, model.input_shape, train_cfg.model.name, ds.class_names, ds.name)
    manifest.float_top1_acc = round(float_acc, 5)
    result = ExportResult(model_dir, model_dir / MANIFEST_NAME, float_acc, len(y_val), timings_s=timings)

    ft = FineTune(train=ds.train, num_classes=ds.num_classes,
                  batch_size=cfg.batch_size or train_cfg.batch_size, lr=0.0,
                  label_smoothing=train_cfg.label_smoothing, optimizer=train_cfg.optimizer.value, seed=cfg.seed,
                  augment=train_cfg.augment)
    sparsity = 0.0
    float_model = model  # the QAT teacher (--qat-distill) is the model before pruning
    if cfg.prune_sparsity:
        from edgeclf.export.prune import prune_model

        lr = result.fine_tune_lr["prune"] = cfg.fine_tune_lr or rewound_lr(train_cfg, cfg.prune_epochs)
        with _step(f"prune to {cfg.prune_sparsity:.0%} ({cfg.prune_epochs} epochs, peak lr {lr:.3g})", timings):
            model, report = prune_model(load_keras_model(model_dir), replace(ft, lr=lr), cfg.prune_sparsity,
                                        cfg.prune_epochs)
        result.sparsity = report.to_dict()
        sparsity = report.kernel_sparsity

    def qat(why: str = ""):
        """The QAT model of ``model`` (``--qat``, or ``--auto-qat``'s second try)."""
        from edgeclf.export.qat import quantize_aware

        lr = result.fine_tune_lr["qat"] = cfg.fine_tune_lr or qat_lr(train_cfg)
        teacher = _qat_teacher(float_model, cfg.qat_distill, model_dir)
        distil = f", distillation alpha {cfg.qat_distill:g}" if teacher else ""
        with _step(f"quantization-aware training{why} ({cfg.qat_epochs} epochs, peak lr {lr:.3g}{distil})", timings):
            return quantize_aware(model, replace(ft, lr=lr, teacher=teacher), cfg.qat_epochs,
                                  preserve_sparsity=bool(cfg.prune_sparsity))

    qat_model = qat() if cfg.qat else None
    ctx = ArtifactContext(model_dir=model_dir, x_val=x_val, y_val=y_val, float_probs=float_probs,
                          float_top1_acc=float_acc, sparsity=sparsity, progress=progress, timings=timings)
    run = _JobRunner(ctx, manifest, result, rep, sparsity)
    with saved_model_cache():  # one SavedModel per model for all its TFLite conversions (QAT: two)
        for fmt, precision in jobs:
            use_qat = qat_model is not None and precision is Precision.INT8
            run(qat_model if use_qat else model, fmt, precision, cfg, use_qat)
        retry = [(fmt, p) for fmt, p in jobs
                 if p is Precision.INT8 and cfg.file_name(fmt, p) in result.failures]
        above = [(fmt, p, ptq) for fmt, p in jobs if p is Precision.INT8
                 for ptq in [_above_target(result, cfg, cfg.file_name(fmt, p))] if ptq is not None]
        if (retry or above) and cfg.qat_if_gate_fails and not cfg.qat and not cfg.allow_drop:
            if retry:
                log.warning("[export] %s failed the accuracy gate: training with QAT and making it again "
                            "(--auto-qat; --no-auto-qat to skip)", ", ".join(cfg.file_name(f, p) for f, p in retry))
            if above:
                log.warning("[export] %s lost more than %g points (--auto-qat-above): training with QAT and "
                            "keeping the better file", ", ".join(ptq.file for _, _, ptq in above),
                            cfg.auto_qat_above_pp)
            qat_model, qcfg = qat(" (--auto-qat)"), cfg.auto_qat()
            for fmt, p in retry:
                if run(qat_model, fmt, p, qcfg, True):
                    result.auto_qat[cfg.file_name(fmt, p)] = result.failures.pop(cfg.file_name(fmt, p))
            for fmt, p, ptq in above:
                made, qat_name = run(qat_model, fmt, p, qcfg, True), qcfg.file_name(fmt, p)
                # a QAT remake that fails or cannot be made leaves the passing post-training file: not an error
                why_not = result.failures.pop(qat_name, None) or result.export_errors.pop(qat_name, None)
                result.auto_qat_above[ptq.file] = _keep_better(model_dir, manifest, result, ptq,
                                                               manifest.artifact(qat_name) if made else None, why_not)
    write_manifest(model_dir, manifest)
    result.fp32_size_bytes = {a.format.value: a.size_bytes for a in manifest.artifacts
                              if a.precision is Precision.FP32}
    write_json(model_dir / EXPORT_CONFIG_NAME, {"config": cfg.to_dict(), "sparsity": result.sparsity,
                                                "fine_tune_lr": result.fine_tune_lr, "timings_s": timings,
                                                "auto_qat": result.auto_qat, "auto_qat_above": result.auto_qat_above,
                                                "float_top1_acc": round(float_acc, 5), "n_images": len(y_val)})
    if result.export_errors:
        raise ExportError("; ".join([*result.export_errors.values(), *result.failures.values()]), result)
    if result.failures:
        raise AccuracyGateError("; ".join(result.failures.values()), result)
    return result

"""``export_model(model_dir, cfg) -> ExportResult``: prune, quantize, export, validate, write the manifest.

Steps (one log line each, with timing):

1. load ``model.keras``, ``config.json`` and the data; float top-1 on the test images;
2. optionally prune (:mod:`.prune`) and QAT (:mod:`.qat`);
3. for each (format, precision) from the registry (:mod:`.registry`): write the file to a temporary
   name, check it (ONNX checker, int8 weight tensors), validate it on the runtime (:mod:`.validate`),
   apply the accuracy gate, rename it into place and add its manifest entry. A failing artifact
   leaves neither a file nor a manifest entry (unless ``allow_drop``: kept, status "validation failed").

Raises :class:`AccuracyGateError` at the end if any artifact failed the gate (the others are kept).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgeclf.export.config import (
    ExportConfig,
    ExportJob,
    Format,
    OnnxInt8Path,
    Precision,
    TfliteInt8Quantizer,
)
from edgeclf.export.validate import AccuracyGateError, Validation

__all__ = ["AccuracyGateError", "ExportConfig", "ExportResult", "Format", "OnnxInt8Path", "Precision",
           "TfliteInt8Quantizer", "Validation", "export_model"]

log = logging.getLogger(__name__)
EXPORT_CONFIG_NAME = "export_config.json"   # the resolved ExportConfig and the pruning report of the last export


@dataclass
class ExportResult:
    """What an export wrote: ``artifacts`` are the manifest entries added (plus failed ones with
    ``"status": "failed"`` and no file), ``sparsity`` the pruning report (or None)."""

    model_dir: Path
    manifest_path: Path
    float_top1_acc: float
    n_images: int
    artifacts: list[dict] = field(default_factory=list)
    sparsity: dict | None = None


@contextmanager
def _step(name: str):
    t0 = time.perf_counter()
    log.info("[export] %s ...", name)
    yield
    log.info("[export] %s done in %.1f s", name, time.perf_counter() - t0)


def _test_subset(x: np.ndarray, y: np.ndarray, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n is None or n >= len(y):
        return x, y
    from edgeclf.data.dataset import stratified_subset

    idx = np.sort(stratified_subset(y, n, seed))
    return x[idx], y[idx]


def _manifest(model_dir: Path, model, train_cfg, class_names: list[str], dataset: str):
    from edgeclf.runtime.manifest import InputSpec, Manifest, ManifestError, read_manifest

    h, w, c = (int(d) for d in model.input_shape[1:4])
    spec = InputSpec(height=h, width=w, channels=c, color_order="GRAY" if c == 1 else "RGB")
    new = Manifest(name=model_dir.name, input=spec, labels=list(class_names), model=train_cfg.model.name,
                   dataset=dataset)
    try:
        old = read_manifest(model_dir)
    except ManifestError:
        return new
    if old.input == spec and old.labels == new.labels:
        new.artifacts = [a for a in old.artifacts if (model_dir / a.get("file", "")).is_file()]
    return new


def _export_one(model, fmt: Format, precision: Precision, job: ExportJob, model_dir: Path, x_val, y_val,
                float_probs, float_acc: float, manifest, sparsity: float, progress: bool) -> tuple[dict, str | None]:
    from edgeclf._io import atomic_path
    from edgeclf.export import artifacts, registry, validate

    cfg = job.config
    name = cfg.file_name(fmt, precision)
    with _step(f"{name}: convert + validate"), atomic_path(model_dir / name) as tmp:
        registry.exporter(fmt, precision)(model, tmp, job)
        weights = artifacts.int8_weight_report(tmp)
        if precision is Precision.INT8 and weights["int8_kernel_params"] == 0:
            raise RuntimeError(f"{name}: the int8 export contains no int8 weight tensors")
        v = validate.validate_file(tmp, x_val, y_val, float_probs, float_acc, progress)
        failure = validate.gate_message(name, v, cfg.max_accuracy_drop_pp)
        from edgeclf.runtime import load_classifier

        clf = load_classifier(tmp)
        quant = {}
        for key, t in (("input_quantization", clf.input_tensor), ("output_quantization", clf.output_tensor)):
            quant[key] = {"dtype": str(t.dtype), "scale": t.scale, "zero_point": t.zero_point} if t.quantized else None
        clf.close()
        entry = {"file": name, "format": fmt.value, "precision": precision.value, "sparsity": sparsity,
                 "quantization_aware": job.quantization_aware,
                 "sha256": artifacts.sha256(tmp), "size_bytes": tmp.stat().st_size,
                 "size_gzip_bytes": artifacts.gzip_size(tmp), **quant, "int8_weights": weights,
                 "validation": v.to_dict(), "status": "ok" if failure is None else "validation failed",
                 "tools": artifacts.tool_versions(), "created": artifacts.utc_now()}
        if precision is Precision.INT8:
            if job.quantization_aware:
                entry["quantizer"] = "qat+converter" + ("+tf2onnx" if fmt is Format.ONNX else "")
            else:
                entry["quantizer"] = cfg.onnx_int8.value if fmt is Format.ONNX else cfg.tflite_int8.value
        if failure is not None and not cfg.allow_drop:
            raise AccuracyGateError(failure)
    if failure is not None:
        log.warning("%s", failure)
    manifest.upsert_artifact(entry)
    return entry, failure


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
        FileNotFoundError / ValueError: not a model directory, malformed config, unusable options.
        edgeclf.data.DataError: the data can't be loaded.
        AccuracyGateError: an artifact dropped more than ``cfg.max_accuracy_drop_pp`` points (and
            ``allow_drop`` is False); its file and entry were not written, the others were.
    """
    from edgeclf._keras import set_seed
    from edgeclf.data import load_dataset
    from edgeclf.data.dataset import representative_images
    from edgeclf.eval_dir import load_keras_model
    from edgeclf.metrics import top1_accuracy
    from edgeclf.runtime.manifest import MANIFEST_NAME, write_manifest
    from edgeclf.train import load_config

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: not a directory (expected an edgeclf model directory)")
    jobs = cfg.jobs()
    set_seed(cfg.seed)
    with _step("load model and data"):
        train_cfg = load_config(model_dir)
        model = load_keras_model(model_dir)
        dcfg = replace(train_cfg.data, source=cfg.data) if cfg.data else train_cfg.data
        ds = load_dataset(dcfg, channels=int(model.input_shape[-1]), progress=progress)
        x_val, y_val = _test_subset(ds.x_test, ds.y_test, cfg.val_samples, cfg.seed)
        x_val = x_val.astype(np.float32)
        float_probs = model.predict(x_val, batch_size=256, verbose=0)
        float_acc = top1_accuracy(float_probs, y_val)
        rep = representative_images(ds.x_train, ds.y_train, cfg.calibration_samples, cfg.seed)
    log.info("[export] float model: top-1 %.4f on %d test images; %d calibration images", float_acc, len(y_val),
             len(rep))
    manifest = _manifest(model_dir, model, train_cfg, ds.class_names, ds.name)
    manifest.float_top1_acc = round(float_acc, 5)
    result = ExportResult(model_dir, model_dir / MANIFEST_NAME, float_acc, len(y_val))

    from edgeclf.export.prune import FINE_TUNE_LR_FACTOR, FineTune

    ft = FineTune(x_train=ds.x_train, y_train=ds.y_train, num_classes=ds.num_classes,
                  batch_size=cfg.batch_size or train_cfg.batch_size, lr=train_cfg.lr * FINE_TUNE_LR_FACTOR,
                  label_smoothing=train_cfg.label_smoothing, optimizer=train_cfg.optimizer.value, seed=cfg.seed,
                  augment=train_cfg.augment)
    sparsity = 0.0
    if cfg.prune_sparsity:
        from edgeclf.export.prune import prune_model

        with _step(f"prune to {cfg.prune_sparsity:.0%} ({cfg.prune_epochs} epochs)"):
            model, report = prune_model(load_keras_model(model_dir), ft, cfg.prune_sparsity, cfg.prune_epochs)
        result.sparsity = report.to_dict()
        sparsity = report.kernel_sparsity
    qat_model = None
    if cfg.qat:
        from edgeclf.export.qat import quantize_aware

        with _step(f"quantization-aware training ({cfg.qat_epochs} epochs)"):
            qat_model = quantize_aware(model, ft, cfg.qat_epochs, preserve_sparsity=bool(cfg.prune_sparsity))

    failures = []
    for fmt, precision in jobs:
        use_qat = qat_model is not None and precision is Precision.INT8
        meta = manifest.embedded_metadata(precision.value, sparsity)
        job = ExportJob(precision=precision, config=cfg, representative=rep, metadata=meta,
                        quantization_aware=use_qat)
        try:
            entry, _ = _export_one(qat_model if use_qat else model, fmt, precision, job, model_dir, x_val,
                                     y_val, float_probs, float_acc, manifest, sparsity, progress)
        except AccuracyGateError as exc:
            failures.append(str(exc))
            result.artifacts.append({"file": cfg.file_name(fmt, precision), "status": "failed", "error": str(exc)})
            continue
        result.artifacts.append(entry)
        write_manifest(model_dir, manifest)
    write_manifest(model_dir, manifest)
    from edgeclf._io import write_json

    write_json(model_dir / EXPORT_CONFIG_NAME, {"config": cfg.to_dict(), "sparsity": result.sparsity,
                                                "float_top1_acc": round(float_acc, 5), "n_images": len(y_val)})
    if failures:
        raise AccuracyGateError("; ".join(failures), result)
    return result

"""``edgeclf export``: thin click command -> ExportConfig -> export_model -> a table of artifacts.

Imports TensorFlow only inside the command (``edgeclf predict``/``webcam`` stay TF-free).
"""

from __future__ import annotations

import click

from edgeclf.cli._errors import user_errors
from edgeclf.errors import AccuracyGateError, ConfigError, ExportError, one_line
from edgeclf.export.config import (
    AUTO_QAT_ABOVE_DEFAULT,
    CALIBRATION_SAMPLING,
    DEFAULT_FORMATS,
    DEFAULT_PRECISIONS,
    FALLBACK_RANKINGS,
    QAT_DISTILL_DEFAULT,
    ExportConfig,
    Int8Io,
    OnnxInt8Recipe,
    TfliteInt8Quantizer,
    parse_formats,
    parse_precisions,
)

_DEFAULT_QUANTIZE = "; ".join(f"{','.join(p.value for p in ps)} for {f.value}" for f, ps in DEFAULT_PRECISIONS.items())


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.3f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def format_table(result) -> str:
    """One row per artifact of an :class:`~edgeclf.export.ExportResult` (written ones, then the ones
    that failed the gate or could not be made): file, size, gzipped, gzipped / fp32 file of the format, top-1, drop
    (points), agreement, status."""
    rows = [("file", "size", "gzipped", "gz/fp32", "top-1", "drop pp", "agree", "status")]
    for a in result.artifacts:
        v, ratio = a.validation, result.gzip_ratio(a)
        rows.append((a.file, _mb(a.size_bytes), _mb(a.size_gzip_bytes), "-" if ratio is None else f"{ratio:.3f}",
                     f"{v.top1_acc:.4f}" if v else "-", f"{v.acc_drop_pp:+.2f}" if v else "-",
                     f"{v.top1_agreement:.4f}" if v else "-", a.status.value))
    rows += [(file, "-", "-", "-", "-", "-", "-", "failed") for file in result.failures]
    rows += [(file, "-", "-", "-", "-", "-", "-", "export failed") for file in getattr(result, "export_errors", {})]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines + int8_notes(result.artifacts))


def int8_notes(artifacts) -> list[str]:
    """Lines under the table: the CPU each int8 file was validated on, its worst layers (quant report)
    and what ``--fallback`` kept in float at which size / latency cost."""
    out = []
    for a in artifacts:
        if a.validated_on is not None and a.precision.value == "int8":
            out.append(f"{a.file}: validated on {a.validated_on.int8_kernel_class} ({a.validated_on.arch}), "
                       f"quantizer {a.quantizer}")
        if a.worst_layers:
            worst = ", ".join(f"{e.layer} ({e.op_type}) {e.snr_db:.1f} dB" for e in a.worst_layers)
            out.append(f"  worst layers by SNR: {worst}")
        if a.fallback is not None:
            fb = a.fallback
            verdict = "within budget" if fb.within_budget else "layer limit reached, still over budget"
            if fb.kept == "best":
                verdict += (f"; kept the best of {len(fb.attempts)} attempt(s)" if a.float_layers else
                            f"; kept the all-int8 file, none of {len(fb.attempts)} attempt(s) was better")
            if fb.ranking != "snr":
                verdict += f"; {fb.ranking} ranking"
            out.append(f"  fallback: {len(a.float_layers)} float layer(s) [{', '.join(a.float_layers)}]: drop "
                       f"{fb.acc_drop_pp_int8:+.2f} -> {a.validation.acc_drop_pp:+.2f} points ({verdict}); size "
                       f"{_mb(fb.size_bytes_int8)} -> {_mb(a.size_bytes)}; p50 {fb.latency_ms_p50_int8:.3f} -> "
                       f"{fb.latency_ms_p50:.3f} ms")
    return out


def _int8_remedy(exc: AccuracyGateError, cfg) -> str:
    """The next step when an int8 file failed the gate and the export tried neither remedy: QAT (the
    CIFAR-10 mobilenet_v2 with --train-bn: post-training int8 lost 1.09 points, after one QAT epoch
    0.17; README) or float fallback of the most sensitive layers."""
    failed = exc.result.failures if exc.result is not None else {}
    if cfg.fallback or not any("int8" in name for name in failed):
        return ""
    if cfg.qat or any("_qat_" in name for name in failed):   # QAT ran (--qat, or --auto-qat's second try)
        return ("; to win the int8 accuracy back, export again with more --qat-epochs or --fallback "
                "(keeps the most sensitive layers in float)")
    return ("; to win the int8 accuracy back, export again with --qat (quantization-aware training, "
            "--qat-epochs) or --fallback (keeps the most sensitive layers in float)")


@click.command("export")
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--formats", default=",".join(f.value for f in DEFAULT_FORMATS), show_default=True,
              help="Comma list of tflite, onnx.")
@click.option("--quantize", "quantize", default=None,
              help=f"Comma list of none, fp16, dynamic, int8 (default: {_DEFAULT_QUANTIZE}). "
                   "Pairs a format lacks (onnx fp16/dynamic) are skipped.")
@click.option("--prune", "prune", type=float, default=0.0, show_default=True,
              help="Target weight sparsity in [0, 1) for Conv/Dense kernels (0 = no pruning).")
@click.option("--prune-epochs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Fine-tuning epochs while pruning.")
@click.option("--qat", is_flag=True, help="Quantization-aware training before int8 conversion (needs int8).")
@click.option("--auto-qat/--no-auto-qat", "auto_qat", default=True, show_default=True,
              help="When a post-training int8 file fails --max-accuracy-drop (and --allow-drop is off), train "
                   "the model with QAT for --qat-epochs and make that file again as model_qat_int8.*.")
@click.option("--auto-qat-above", "auto_qat_above", type=click.FloatRange(min=0.0), default=AUTO_QAT_ABOVE_DEFAULT,
              show_default=True,
              help="With --auto-qat, also train with QAT when a post-training int8 file passes the gate but loses "
                   "more than this many top-1 points, and keep whichever file loses less (the other is deleted). "
                   "Set it to --max-accuracy-drop for QAT on gate failures only.")
@click.option("--qat-epochs", type=click.IntRange(min=1), default=None,
              help="Epochs of quantization-aware training (--qat, --auto-qat). Default per model: 2 for models "
                   "trained with --train-bn (mobilenet_v2's recipe), whose post-training int8 loses most, else 1.")
@click.option("--qat-distill", type=click.FloatRange(0.0, 1.0), default=QAT_DISTILL_DEFAULT, show_default=True,
              help="Weight of knowledge distillation from the float model in the QAT loss (temperature 1, "
                   "the float model's outputs on each augmented batch); 0 = cross-entropy on the labels only.")
@click.option("--fine-tune-lr", type=float, default=None,
              help="Peak learning rate of pruning/QAT fine-tuning (default: learning-rate rewinding for pruning, "
                   "10 %% of the training's last-phase peak for QAT; docs/quantization.md).")
@click.option("--calibration-images", "--calibration-samples", "calibration_samples", type=int, default=500,
              show_default=True, help="Training images for int8 calibration: stratified by class, no augmentation, "
                                      "the validation preprocessing.")
@click.option("--calibration-sampling", type=click.Choice(list(CALIBRATION_SAMPLING)), default="stratified",
              hidden=True, help="How calibration images are drawn (random: for the calibration study).")
@click.option("--data", default=None, help="Data source instead of the one in config.json.")
@click.option("--max-accuracy-drop", type=float, default=1.0, show_default=True,
              help="Fail an artifact whose test top-1 is more than this many points below the float model.")
@click.option("--allow-drop", is_flag=True, help="Keep such artifacts, marked 'validation failed'.")
@click.option("--val-samples", type=int, default=None, help="Test images for validation (default: all).")
@click.option("--tflite-int8", type=click.Choice([q.value for q in TfliteInt8Quantizer]),
              default=TfliteInt8Quantizer.CONVERTER.value, show_default=True, help="int8 TFLite quantizer.")
@click.option("--int8-io", type=click.Choice([t.value for t in Int8Io]), default=Int8Io.UINT8.value,
              show_default=True, help="Input/output type of the int8 .tflite: uint8 runs in MediaPipe Tasks, "
                                      "the TFLite Task Library, Android and Coral (pixels as they are); int8 "
                                      "(zero point -128; needed with --tflite-int8 ai-edge-quantizer); float32 "
                                      "(quantize/dequantize inside). The int8 .onnx keeps int8 I/O.")
@click.option("--onnx-int8", type=click.Choice([q.value for q in OnnxInt8Recipe]),
              default=OnnxInt8Recipe.AUTO.value, show_default=True,
              help="int8 ONNX recipe; auto: onnxruntime's advice for this CPU's int8 kernels (x86 without VNNI: "
                   "u8s8-reduce-range, with VNNI: u8s8, ARM: s8s8). See docs/quantization.md.")
@click.option("--quant-report", is_flag=True,
              help="Per-layer quantization error (SNR, MSE) of each int8 artifact on the calibration images: "
                   "quant_report_<file>.csv + .png in MODEL_DIR, worst 5 layers in the table.")
@click.option("--fallback", is_flag=True,
              help="When an int8 artifact fails --max-accuracy-drop, keep its most sensitive layers in float, "
                   "one more at a time, until it passes or --fallback-max-layers is reached; if none passes, "
                   "the attempt (or the all-int8 file) with the smallest drop is kept.")
@click.option("--fallback-max-layers", type=int, default=8, show_default=True,
              help="At most this many layers in float with --fallback.")
@click.option("--fallback-ranking", type=click.Choice(list(FALLBACK_RANKINGS)), default="snr", show_default=True,
              help="Order --fallback adds layers in. snr: lowest SNR of the per-layer quantization report first "
                   "(no extra conversion). measured: each of the --fallback-max-layers lowest-SNR layers tried "
                   "alone in float, smallest accuracy drop first (that many more conversions + validations).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Fine-tuning batch size (pruning, QAT); default: the training run's.")
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def export_cmd(model_dir, formats, quantize, prune, prune_epochs, qat, auto_qat, auto_qat_above, qat_epochs, qat_distill, fine_tune_lr, calibration_samples,
               calibration_sampling, data, max_accuracy_drop, allow_drop, val_samples, tflite_int8, int8_io, onnx_int8, quant_report, fallback, fallback_max_layers,
               fallback_ranking, batch_size, seed):
    """Prune/quantize MODEL_DIR/model.keras, write .tflite/.onnx files, validate each, update manifest.json."""
    try:
        cfg = ExportConfig(formats=parse_formats(formats),
                           precisions=parse_precisions(quantize) if quantize else None,
                           prune_sparsity=prune, prune_epochs=prune_epochs, qat=qat, qat_if_gate_fails=auto_qat, auto_qat_above_pp=auto_qat_above, qat_epochs=qat_epochs, qat_distill=qat_distill,
                           fine_tune_lr=fine_tune_lr, calibration_samples=calibration_samples,
                           calibration_sampling=calibration_sampling, data=data,
                           max_accuracy_drop_pp=max_accuracy_drop, allow_drop=allow_drop, val_samples=val_samples,
                           tflite_int8=TfliteInt8Quantizer(tflite_int8), int8_io=Int8Io(int8_io),
                           onnx_int8=OnnxInt8Recipe(onnx_int8), quant_report=quant_report, fallback=fallback,
                           fallback_max_layers=fallback_max_layers, fallback_ranking=fallback_ranking,
                           batch_size=batch_size, seed=seed)
    except ConfigError as exc:
        raise click.UsageError(one_line(exc)) from None
    from edgeclf.export import export_model

    try:
        result = export_model(model_dir, cfg)
    except AccuracyGateError as exc:
        if exc.result is not None:
            click.echo(format_table(exc.result))
        raise click.ClickException(f"accuracy gate failed: {one_line(exc)}{_int8_remedy(exc, cfg)}") from None
    except ExportError as exc:  # a converter raised on some artifact; the others were made and listed
        if exc.result is not None:
            click.echo(format_table(exc.result))
        raise click.ClickException(one_line(exc)) from None
    click.echo(f"float model: top-1 {result.float_top1_acc:.4f} on {result.n_images} test images")
    if result.sparsity:
        click.echo(f"pruning: {result.sparsity['kernel_sparsity']:.1%} of Conv/Dense kernel weights are zero "
                   f"(target {result.sparsity['target']:.0%})")
    for why in result.auto_qat.values():
        click.echo(f"--auto-qat: {why.split(' (limit')[0]}; made again with quantization-aware training "
                   "(the _qat_ file below)")
    for line in result.auto_qat_above.values():
        click.echo(f"--auto-qat-above {auto_qat_above:g}: {line}")
    if result.fine_tune_lr:
        click.echo("fine-tuning peak learning rate: " + ", ".join(f"{k} {v:.3g}" for k, v in result.fine_tune_lr.items()))
    click.echo(format_table(result))
    click.echo(f"-> {result.manifest_path}")

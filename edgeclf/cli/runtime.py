"""Click commands of the edge runtime: ``edgeclf predict`` and ``edgeclf webcam``.

Thin: parse options, call :func:`edgeclf.runtime.load_classifier` and one library function, print
the result. Never imports TensorFlow. Registered by ``edgeclf/cli/__init__.py``::

    cli.add_command(predict_cmd, "predict")
    cli.add_command(webcam_cmd, "webcam")

Every failure a user can cause (an :class:`~edgeclf.errors.EdgeclfError` or an ``OSError``) ends as
one ``Error:`` line naming the file (exit code 1, no traceback) through
:func:`~edgeclf.cli._errors.user_errors`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path

import click

from edgeclf.cli._errors import user_errors
from edgeclf.cli.options import parse_floats, parse_size

_MODEL_HELP = "A .tflite/.onnx file, or a model directory with manifest.json (default artifact: int8 .tflite)."


def model_options(threads_default: int | None, threads_help: str):
    """Options shared by predict and webcam: how to open the model."""
    options = [
        click.option("--artifact", metavar="FILE", help="With a model directory: the artifact file to run "
                     "(e.g. model_fp32.onnx) instead of the default int8 .tflite; 'any': the best listed "
                     "file present (by default a missing default artifact is an error)."),
        click.option("--no-verify", "no_verify", is_flag=True,
                     help="Skip the sha256 check of the artifact against manifest.json (costs one read of the "
                          "file, ~1 ms per MB)."),
        click.option("--labels", "labels_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Labels file, one class name per line in index order (overrides the metadata; "
                          "needed for a model that declares no labels)."),
        click.option("--input-size", metavar="HxW", help="Model input height x width in pixels, e.g. 224x224 "
                     "(overrides the metadata and the model's input shape; needed only for a dynamic-size "
                     "input that no metadata declares)."),
        click.option("--mean", metavar="A,B,C", help="Per-channel mean subtracted on the 0-255 scale "
                     "(default from metadata; edgeclf models: 0, they normalise inside)."),
        click.option("--std", metavar="A,B,C", help="Per-channel std divided by after the mean (default from metadata; 1)."),
        click.option("--threads", type=click.IntRange(min=1), default=threads_default,
                     show_default=threads_default is not None,
                     help="CPU threads for the inference engine (LiteRT num_threads / onnxruntime "
                          "intra-op threads). " + threads_help),
        click.option("--providers", metavar="P1,P2", help="onnxruntime execution providers in priority order "
                     "(.onnx only), e.g. CPUExecutionProvider."),
        click.option("--tta", is_flag=True, help="Flip test-time augmentation: average the class probabilities "
                     "of each image and its horizontal mirror (2 inferences per image: twice the latency). For "
                     "classes that look the same mirrored, not text or left/right."),
    ]
    def decorate(f):
        for opt in reversed(options):
            f = opt(f)
        return f

    return decorate


def _load(model, artifact, no_verify, labels_file, input_size, mean, std, threads, providers, tta):
    """Open the model for the shared options (ModelLoadError names the file)."""
    from edgeclf.runtime import load_classifier

    return load_classifier(
        model, labels_file=labels_file, input_size=parse_size(input_size, "--input-size"),
        mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std"), threads=threads,
        providers=[p.strip() for p in providers.split(",") if p.strip()] if providers else None,
        artifact=artifact, verify=not no_verify, tta=tta,
    )


@click.command("predict")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True)
@model_options(None, "Default: the engine's choice.")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1),
              help="Classes listed per image; on a labelled folder also reports top-k accuracy.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Images per inference call (higher = more throughput, more memory).")
@click.option("--json", "json_out", metavar="FILE", help="Also write all predictions as JSON to FILE ('-' = stdout).")
@click.option("--csv", "csv_out", metavar="FILE", help="Also write all predictions as CSV to FILE ('-' = stdout).")
@click.option("--max-rows", default=50, show_default=True, type=click.IntRange(min=0),
              help="Rows of the printed table (0 = all); --json/--csv always hold every row.")
@user_errors
def predict_cmd(model, images, artifact, no_verify, labels_file, input_size, mean, std, threads, providers, tta,
                top_k, batch_size, json_out, csv_out, max_rows):
    """Classify IMAGES (files, folders searched recursively, or glob patterns) with MODEL.

    Prints a table of each file's top-k labels and probabilities. If every image sits in a folder
    named after a class (e.g. test/cat/001.jpg), also prints top-1 accuracy and a confusion matrix
    (rows: true class, columns: predicted). Undecodable images are skipped with a warning.

    The model's own metadata says the input size, labels and normalisation: edgeclf's, or the
    standard TFLite Model Metadata of MediaPipe / Model Maker models; a fixed input shape gives the
    size. A model that declares no labels needs --labels (and a dynamic-size one --input-size).
    """
    from edgeclf.runtime.predict import predict_files
    from edgeclf.runtime.report import format_summary, format_table, report_csv, report_json, write_report
    from edgeclf.runtime.sources import expand_image_paths

    if json_out == "-" and csv_out == "-":
        raise click.UsageError("only one of --json and --csv can write to stdout ('-')")
    clf = _load(model, artifact, no_verify, labels_file, input_size, mean, std, threads, providers, tta)
    files = expand_image_paths(images)

    from tqdm import tqdm

    bar = tqdm(total=len(files), unit="img", desc="predict", disable=None if len(files) >= 200 else True,
               leave=False, file=click.get_text_stream("stderr"))

    def warn(file: str, reason: str) -> None:
        bar.clear()
        click.echo(f"warning: skipped {reason}", err=True)

    try:
        report = predict_files(clf, files, batch_size=batch_size, top_k=top_k, on_skip=warn,
                               on_progress=bar.update)
    finally:
        bar.close()

    to_stdout = "-" in (json_out, csv_out)
    for out, fmt, render in ((json_out, "json", report_json), (csv_out, "csv", report_csv)):
        if out == "-":
            click.echo(render(report), nl=False)
        elif out:
            write_report(report, out, fmt)  # atomic; an OSError names ``out``
    echo = (lambda s: click.echo(s, err=True)) if to_stdout else click.echo
    if not to_stdout:
        echo(format_table(report, max_rows=max_rows or None))
        echo("")
    echo(format_summary(report))
    for out in (json_out, csv_out):
        if out and out != "-":
            echo(f"wrote {out}")


@click.command("webcam")
@click.argument("model", type=click.Path(path_type=Path))
@model_options(1, "The capture/decode thread uses another core; more engine threads only compete "
                   "with it unless the model is large (measured on 2 cores: 1 thread is fastest).")
@click.option("--source", default="0", show_default=True,
              help="Camera index (0), stream URL (rtsp://..., http://...) or a video file. Live sources "
                   "keep only the newest frame; a video file is processed frame by frame, as fast as possible.")
@click.option("--headless", is_flag=True, help="No window (automatic when OpenCV has no GUI or no display is set).")
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path),
              help="Save the annotated video (label, confidence, FPS overlay) as mp4v to this file.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after N frames.")
@click.option("--print-predictions", is_flag=True, help="Print 'frame label prob' for every frame.")
@click.option("--read-timeout", default=5.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds without a frame before the source counts as stalled.")
@click.option("--reconnects", default=3, show_default=True, type=click.IntRange(min=0),
              help="Reconnect attempts in a row for a lost live source, with exponential back-off (0.5 s, 1 s, 2 s, ...).")
@click.option("--max-skipped-frames", default=50, show_default=True, type=click.IntRange(min=0),
              help="Video files: undecodable frames skipped (and counted) before the file counts as unreadable.")
@click.option("--json-stats", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the end-of-run stats (FPS, p50/p95 latency per stage) as JSON.")
@user_errors
def webcam_cmd(model, artifact, no_verify, labels_file, input_size, mean, std, threads, providers, tta,
               source, headless, save, max_frames, print_predictions, read_timeout, reconnects, max_skipped_frames,
               json_stats):
    """Classify frames from a camera, stream or video file with MODEL, live.

    Shows a window with the top-1 label, its confidence and the FPS (or runs headless), optionally
    saves the annotated video. At the end prints frames, wall-clock throughput (FPS) and p50/p95
    latency in ms of each stage: capture wait, decode, preprocess, inference, overlay/write.
    Quit with q or Esc in the window, or Ctrl-C.
    """
    from edgeclf.runtime.camera import CameraConfig, run_camera

    clf = _load(model, artifact, no_verify, labels_file, input_size, mean, std, threads, providers, tta)
    config = CameraConfig(source=source, headless=headless, save=save, max_frames=max_frames,
                          read_timeout_s=read_timeout, reconnects=reconnects,
                          max_skipped_frames=max_skipped_frames)

    def show(idx: int, label: str, prob: float) -> None:
        click.echo(f"frame {idx:6d}  {label}  {prob:.3f}")

    stats = run_camera(clf, config, on_prediction=show if print_predictions else None,
                       log=lambda msg: click.echo(f"note: {msg}", err=True))
    click.echo(stats.format())
    if save is not None and stats.frames:
        click.echo(f"saved {save}")
    if json_stats is not None:
        from edgeclf._io import write_json

        write_json(json_stats, stats.to_dict())  # atomic; an OSError names ``json_stats``
    if not stats.ok:
        raise click.ClickException(f"{source}: run ended early: {stats.end_reason}")

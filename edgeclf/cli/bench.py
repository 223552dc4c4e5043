"""Click command ``edgeclf bench``: thin wrapper around :func:`edgeclf.bench.run_bench`.

Registered by ``edgeclf/cli/__init__.py`` (``cli.add_command(bench_cmd, "bench")``). Importing this
module does not import TensorFlow; the Keras rows run in worker processes.
"""

from __future__ import annotations

from pathlib import Path

import click

from edgeclf.cli._errors import user_errors
from edgeclf.errors import ConfigError, one_line


@click.command("bench")
@click.argument("model_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Results directory [default: benchmarks/results/<model name>].")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep scratch files (worker logs, baseline_default.tflite) here [default: a temporary "
                   "directory, removed afterwards].")
@click.option("--data", default=None, help="Test data (cifar10 or DIR) instead of the one in config.json.")
@click.option("--test-samples", type=click.IntRange(min=1), default=None,
              help="Stratified subset of N test images [default: the full test split; --quick: 200].")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU threads of every engine (LiteRT, onnxruntime, TF intra-op).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per call for throughput_ips (fixed batch-1 models loop).")
@click.option("--min-accuracy", type=click.FloatRange(min=0.0), default=None,
              help="Rows with top1_acc below this fail ('below min accuracy') and the command exits 1.")
@click.option("--quick", is_flag=True, help="Smoke run: 200 test images (unless --test-samples), few timing repeats.")
@click.option("--min-iters", type=click.IntRange(min=1), default=None,
              help="Timed batch-1 calls per row, at least [default: 200; --quick: 20].")
@click.option("--min-seconds", type=click.FloatRange(min=0.0), default=None,
              help="Timed seconds per row, at least [default: 2; --quick: 0.05].")
@click.option("--keras/--no-keras", default=True, show_default=True,
              help="Measure the float original (model.predict and tf.function rows).")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Convert and measure the plain default-converter TFLite as a reference row.")
@click.option("--no-verify", "no_verify", is_flag=True,
              help="Skip the sha256 check of the artifacts against manifest.json (~1 ms per MB).")
@click.option("--tta", is_flag=True,
              help="Flip test-time augmentation in every row: top-1 from each image and its mirror, latency and "
                   "throughput of both inferences (what `edgeclf predict --tta` costs).")
@click.option("--strict", is_flag=True, help="Exit 1 if any row's status is not ok (missing exports included).")
@user_errors
def bench_cmd(model_dir, out_dir, work_dir, data, test_samples, threads, batch_size, min_accuracy, quick,
              min_iters, min_seconds, keras, baseline, no_verify, tta, strict):
    """Benchmark every artifact of MODEL_DIR against its float original.

    Writes bench.md (printed), bench.csv, bench.json, machine.json, accuracy_vs_latency.png and
    size.png. Every artifact runs in a fresh worker process; failures become status rows.
    """
    from dataclasses import replace

    from edgeclf.bench import BenchConfig, TimingConfig, run_bench

    timing = TimingConfig.quick() if quick else TimingConfig()
    try:
        if min_iters is not None:
            timing = replace(timing, min_iters=min_iters)
        if min_seconds is not None:
            timing = replace(timing, min_seconds=min_seconds, max_seconds=max(timing.max_seconds, min_seconds))
        cfg = BenchConfig(out_dir=out_dir, work_dir=work_dir, data=data,
                          test_samples=test_samples or (200 if quick else None), threads=threads,
                          batch_size=batch_size, min_accuracy=min_accuracy, keras=keras, baseline=baseline,
                          timing=timing, verify=not no_verify, tta=tta)
    except ConfigError as exc:
        raise click.UsageError(one_line(exc)) from None
    result = run_bench(model_dir, cfg)
    click.echo(result.files["md"].read_text(encoding="utf-8"))
    click.echo(f"results -> {result.out_dir}")
    below = result.below_min_accuracy
    if below:
        names = ", ".join(f"{r.format} {r.precision}" for r in below)
        raise click.ClickException(f"{len(below)} row(s) below --min-accuracy {min_accuracy}: {names}")
    if strict and result.failed:
        names = ", ".join(f"{r.format} {r.precision} ({r.status.value})" for r in result.failed)
        raise click.ClickException(f"--strict: {len(result.failed)} row(s) not ok: {names}")

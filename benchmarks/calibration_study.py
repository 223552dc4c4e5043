"""int8 calibration: how many images, stratified or not (issue 11b).

Usage (about 20 min for the full-CIFAR-10 ``cnn`` on the 2-core EPYC when nothing else runs):

    python benchmarks/calibration_study.py /work/runs/r2s2/cifar10-jpg-cnn
    python benchmarks/calibration_study.py MODEL_DIR --images 100,500,2000 --seeds 0,1,2 --dry-run

Copies MODEL_DIR to ``--work`` (the original is never written) and, for every calibration size N
in ``--images`` and sampling in ``--sampling`` (``stratified``: each class its share, the default
of ``edgeclf export``; ``random``: a uniform sample of the training split), runs
``edgeclf export COPY --formats tflite,onnx --quantize int8 --calibration-images N --allow-drop``
in a fresh process. The calibration images are always training images as stored (no augmentation)
through the validation preprocessing; the validation set (all test images unless
``--export-args "--val-samples M"``) is the same for every run. ``--seeds`` repeats the
stratified runs with other calibration samples (export ``--seed``; the validation subset, when
one is used, changes with it too), so a difference can be compared with the spread a different
sample of the same size gives.

Per artifact: top-1, drop vs float (points), top-1 agreement with the float model (the sensitive
number: top-1 moves by 1 image = 0.01 points), max |p - p_float|, the ONNX recipe/quantizer, wall
time. Writes ``OUT/results.json`` and ``OUT/README.md`` (CPU model and flags, the date).

Time: one export of the two int8 files with 10 000-image validation ~150 s (+ ~10 s per 1000
calibration images: decoding, the converter's calibration, onnxruntime's MinMax pass); the default
3 sizes x 2 samplings + 2 more seeds at 500 = 8 exports ~ 21 min.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _export_study import (
    REPO,
    add_run_args,
    artifact_row,
    export,
    fmt,
    int8_name,
    manifest,
    start,
    write_atomic,
)


def plan(a) -> list[tuple[int, str, int]]:
    """(N, sampling, seed) per export, in run order."""
    sizes = [int(x) for x in a.images.split(",")]
    runs = [(n, s, 0) for n in sizes for s in a.sampling.split(",")]
    extra = [int(x) for x in a.seeds.split(",") if int(x) != 0]
    runs += [(n, "stratified", seed) for n in (a.seed_images and [a.seed_images] or sizes) for seed in extra]
    return runs


def readme(res: dict) -> str:
    m = res["machine"]
    lines = ["# int8 calibration: size and sampling (issue 11b)", "",
             f"`python benchmarks/calibration_study.py {res['model_dir']}`, {m['date_utc']}.", "",
             f"CPU: {m['cpu_model']} ({m['arch']}, {m['cpus']} CPUs; flags {' '.join(m['flags'])}); "
             f"load average at start {m['load_avg_at_start']}.",
             f"Float Keras model: top-1 {fmt(res.get('float_top1_acc'))}. Calibration images: training split as "
             "stored, no augmentation, the validation preprocessing.", "",
             "| calibration images | sampling | seed | file | quantizer | top-1 | drop pp | agreement | max abs dp | wall s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in res["runs"]:
        for r in run["artifacts"]:
            lines.append(f"| {run['images']} | {run['sampling']} | {run['seed']} | {r['file']} | {r['quantizer']} | "
                         f"{fmt(r['top1_acc'])} | {fmt(r['acc_drop_pp'], '+.2f')} | {fmt(r['top1_agreement'])} | "
                         f"{fmt(r['max_abs_prob_diff'])} | {run['wall_s']} |")
        if run["exit_code"]:
            lines.append(f"| {run['images']} | {run['sampling']} | {run['seed']} | (failed: {run['error']}) | | | | | | |")
    lines += ["", "Spread of agreement over seeds (stratified, same N), per file:"]
    for key, v in res["seed_spread"].items():
        lines.append(f"- {key}: agreement {v['min']:.4f} .. {v['max']:.4f} over {v['n']} seeds")
    lines += ["", "Raw numbers and commands: results.json."]
    return "\n".join(lines) + "\n"


def seed_spread(runs: list[dict]) -> dict:
    """'N images, FILE' -> min/max agreement over the stratified runs that differ only in seed."""
    groups: dict[str, list[float]] = {}
    for run in runs:
        if run["sampling"] != "stratified":
            continue
        for r in run["artifacts"]:
            if r["top1_agreement"] is not None:
                groups.setdefault(f"{run['images']} images, {r['file']}", []).append(r["top1_agreement"])
    return {k: {"min": min(v), "max": max(v), "n": len(v)} for k, v in groups.items() if len(v) > 1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--work", type=Path, default=None, help="copy to work on (default /tmp/edgeclf-calibration/NAME)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "calibration")
    p.add_argument("--images", default="100,500,2000", help="calibration sizes")
    p.add_argument("--sampling", default="stratified,random")
    p.add_argument("--seeds", default="0,1,2", help="calibration samples for the spread (stratified)")
    p.add_argument("--seed-images", type=int, default=500, help="the size the extra seeds run at (0 = every size)")
    p.add_argument("--formats", default="tflite,onnx")
    p.add_argument("--export-args", default="", help="more edgeclf export options (smoke tests: --val-samples N)")
    p.add_argument("--export-seconds", type=float, default=150.0, help="one export (for the estimate)")
    add_run_args(p)
    a = p.parse_args()
    runs = plan(a)
    est = sum(a.export_seconds + 10 * n / 1000 for n, _, _ in runs)
    for n, s, seed in runs:
        print(f"  --calibration-images {n} --calibration-sampling {s} --seed {seed}")
    print(f"{len(runs)} exports, estimated ~{est / 60:.0f} min")
    if a.dry_run:
        return
    work, res = start(a, "/tmp/edgeclf-calibration", est)
    res["runs"] = []
    for n, s, seed in runs:
        args = ["--formats", a.formats, "--quantize", "int8", "--allow-drop", "--calibration-images", str(n),
                "--calibration-sampling", s, "--seed", str(seed), *a.export_args.split()]
        r = export(work, args, work / f"export-{n}-{s}-{seed}.log", a.python)
        r.pop("export_config")
        m = manifest(work)
        rows = [row for f in int8_name(a.formats.split(",")) if (row := artifact_row(m, f, r["started_utc"]))]
        res["runs"].append({"images": n, "sampling": s, "seed": seed, **r, "artifacts": rows})
        res["float_top1_acc"] = m.get("float_top1_acc")
        res["seed_spread"] = seed_spread(res["runs"])
        write_atomic(a.out / "results.json", json.dumps(res, indent=2) + "\n")
        write_atomic(a.out / "README.md", readme(res))
    print(f"-> {a.out / 'results.json'}, {a.out / 'README.md'}")


if __name__ == "__main__":
    main()

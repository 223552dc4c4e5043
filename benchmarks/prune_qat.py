"""Pruning + int8 + gzip vs the fp32 file, with and without prune-preserving QAT (issue 11a).

Usage (the lead's full-CIFAR-10 ``cnn``; about 35 min on the 2-core EPYC when nothing else runs):

    python benchmarks/prune_qat.py /work/runs/r2s2/cifar10-jpg-cnn [--prune-epochs 3] [--qat-epochs 1]
    python benchmarks/prune_qat.py MODEL_DIR --dry-run        # the plan and its time estimate only

Copies MODEL_DIR to ``--work`` (the original is never written) and runs ``edgeclf export`` on the
copy, one fresh process per step, all with ``--quantize int8 --allow-drop`` (a file over the 1-point
gate is kept and marked, so it is still measured):

1. ``int8``: post-training int8, no pruning (the reference of the int8 path);
2. ``prune``: ``--prune S --prune-epochs E1`` (magnitude pruning, then post-training int8);
3. ``prune+qat``: ``--prune S --prune-epochs E1 --qat --qat-epochs E2`` (the prune-preserving QAT path);
4. with ``--equal-budget`` also ``--prune S --prune-epochs E1+E2``: the same fine-tuning epochs as
   step 3 without QAT, to tell what QAT adds from what one more epoch adds.

(A model directory without fp32 files first gets ``--quantize none`` for the size reference.)
Per artifact: top-1, drop vs the float Keras model (points), top-1 agreement, file and gzip -9
sizes, gzip / fp32 file of the same format (the issue's <= 0.10), int8 zeros counted in the file,
the pruning report, the fine-tuning learning rates, and the wall time of every export step.
Writes ``OUT/results.json`` and ``OUT/README.md`` (CPU model and flags from lscpu, the date).

Time per step (estimate printed before running; ``--epoch-seconds`` is one training epoch of the
model, ~215 s for the full CIFAR-10 ``cnn`` on this machine): an export of two int8 files with
10 000-image validation ~150 s; a pruning epoch ~1.1 x a training epoch (mask updates); a QAT epoch
~1.6 x (fake-quant ops). Default E1 = 3, E2 = 1: 150 + (150 + 3 x 237) + (150 + 3 x 237 + 344)
~ 2200 s ~ 37 min; ``--equal-budget`` adds ~ 1100 s.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _export_study import (
    REPO,
    add_run_args,
    artifact_row,
    export,
    fmt,
    fp32_sizes,
    int8_name,
    manifest,
    start,
    write_atomic,
)

TARGET_RATIO, TARGET_DROP = 0.10, 1.0


def plan(a) -> list[tuple[str, list[str], float]]:
    """(step name, export args, estimated seconds) in run order."""
    base = ["--formats", a.formats, "--quantize", "int8", "--allow-drop", *a.export_args.split()]
    prune = ["--prune", str(a.sparsity), "--prune-epochs", str(a.prune_epochs)]
    e_prune, e_qat = a.epoch_seconds * a.prune_slowdown, a.epoch_seconds * a.qat_slowdown
    steps = [("int8", base, a.export_seconds),
             ("prune", base + prune, a.export_seconds + a.prune_epochs * e_prune),
             ("prune+qat", base + prune + ["--qat", "--qat-epochs", str(a.qat_epochs)],
              a.export_seconds + a.prune_epochs * e_prune + a.qat_epochs * e_qat)]
    if a.equal_budget:
        e = a.prune_epochs + a.qat_epochs
        steps.append((f"prune {e} epochs", base + ["--prune", str(a.sparsity), "--prune-epochs", str(e)],
                      a.export_seconds + e * e_prune))
    return steps


def files_of(step: str, a) -> list[str]:
    formats = a.formats.split(",")
    if step == "int8":
        return int8_name(formats)
    return int8_name(formats, a.sparsity, qat=step == "prune+qat")


def verdict(steps: list[dict]) -> dict:
    """Per format: is there a pruned int8 file with gzip <= 0.10 x fp32 file at <= 1 point drop; the
    measured best otherwise; and whether QAT won back what pruning lost."""
    out = {}
    rows = [(s["name"], r) for s in steps if s["name"] != "int8" for r in s["artifacts"]]
    for f in sorted({r["format"] for _, r in rows}):
        mine = [(n, r) for n, r in rows if r["format"] == f and r["acc_drop_pp"] is not None]
        ok = [(n, r) for n, r in mine if r["acc_drop_pp"] <= TARGET_DROP and r["gzip_vs_fp32_file"] is not None]
        best = min(ok, key=lambda x: x[1]["gzip_vs_fp32_file"]) if ok else min(mine, key=lambda x: x[1]["acc_drop_pp"],
                                                                               default=None)
        v = {"target_met": any(r["gzip_vs_fp32_file"] <= TARGET_RATIO for _, r in ok)}
        if best:
            n, r = best
            v["best"] = {"step": n, "file": r["file"], "gzip_vs_fp32_file": r["gzip_vs_fp32_file"],
                         "acc_drop_pp": r["acc_drop_pp"]}
            if not v["target_met"]:
                v["reason"] = ("no pruned file within 1 point" if not ok else
                               f"smallest within 1 point is {r['gzip_vs_fp32_file']:.3f} of the fp32 file")
        drops = {n: r["acc_drop_pp"] for n, r in mine}
        if "prune" in drops and "prune+qat" in drops:
            v["qat_wins_back_pp"] = round(drops["prune"] - drops["prune+qat"], 2)
        out[f] = v
    return out


def readme(res: dict) -> str:
    m, s = res["machine"], res["settings"]
    lines = ["# Pruning + int8 + gzip, with and without prune-preserving QAT (issue 11a)", "",
             f"`python benchmarks/prune_qat.py {res['model_dir']}` "
             f"(sparsity {s['sparsity']}, pruning {s['prune_epochs']} epochs, QAT {s['qat_epochs']} epoch(s)), "
             f"{m['date_utc']}.", "",
             f"CPU: {m['cpu_model']} ({m['arch']}, {m['cpus']} CPUs; flags {' '.join(m['flags'])}); "
             f"load average at start {m['load_avg_at_start']}.",
             f"Float Keras model: top-1 {fmt(res['float_top1_acc'])} on the validation images. Sizes: fp32 "
             + ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in res["fp32_size_bytes"].items()) + ".", "",
             "| step | file | top-1 | drop pp | agreement | size | gzip | gzip / fp32 file | int8 zeros | status |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for st in res["steps"]:
        for r in st["artifacts"]:
            lines.append(f"| {st['name']} | {r['file']} | {fmt(r['top1_acc'])} | {fmt(r['acc_drop_pp'], '+.2f')} | "
                         f"{fmt(r['top1_agreement'])} | {r['size_bytes'] / 1e6:.3f} MB | "
                         f"{r['size_gzip_bytes'] / 1e6:.3f} MB | {fmt(r['gzip_vs_fp32_file'], '.3f')} | "
                         f"{fmt(r['int8_kernel_zero_fraction'], '.1%')} | {r['status']} |")
        if st["exit_code"]:
            lines.append(f"| {st['name']} | (failed: {st['error']}) | | | | | | | | |")
    lines += ["", "| step | wall s | fine-tuning peak lr | kernel sparsity | export steps (s) |", "| --- | --- | --- | --- | --- |"]
    for st in res["steps"]:
        lr = ", ".join(f"{k} {v:.3g}" for k, v in (st.get("fine_tune_lr") or {}).items()) or "-"
        t = "; ".join(f"{k} {v}" for k, v in (st.get("timings_s") or {}).items())
        lines.append(f"| {st['name']} | {st['wall_s']} | {lr} | {fmt(st.get('kernel_sparsity'), '.1%')} | {t} |")
    lines += ["", "Target: a pruned int8 file, gzip -9, <= 0.10 of the fp32 file at <= 1 point drop."]
    for f, v in res["verdict"].items():
        b = v.get("best")
        text = f"- {f}: " + ("met" if v["target_met"] else "not met") + (
            f"; best {b['file']} ({b['step']}): {b['gzip_vs_fp32_file']:.3f} of fp32 at {b['acc_drop_pp']:+.2f} "
            "points" if b else "") + (f" ({v['reason']})" if v.get("reason") else "")
        if "qat_wins_back_pp" in v:
            text += f"; QAT after pruning changes the drop by {-v['qat_wins_back_pp']:+.2f} points"
        lines.append(text)
    lines += ["", "Raw numbers, commands and logs' locations: results.json."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--work", type=Path, default=None, help="copy to work on (default /tmp/edgeclf-prune-qat/NAME)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "prune-qat")
    p.add_argument("--sparsity", type=float, default=0.75)
    p.add_argument("--prune-epochs", type=int, default=3)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--equal-budget", action="store_true", help="also prune for E1+E2 epochs without QAT")
    p.add_argument("--formats", default="tflite,onnx")
    p.add_argument("--export-args", default="", help="more edgeclf export options for every step (smoke tests: "
                                                      "--val-samples N)")
    p.add_argument("--epoch-seconds", type=float, default=215.0, help="one training epoch (for the estimate)")
    p.add_argument("--prune-slowdown", type=float, default=1.1)
    p.add_argument("--qat-slowdown", type=float, default=1.6)
    p.add_argument("--export-seconds", type=float, default=150.0, help="one export without fine-tuning")
    add_run_args(p)
    a = p.parse_args()
    if not 0 < a.sparsity < 1 or a.prune_epochs < 1 or a.qat_epochs < 1:
        sys.exit("Error: --sparsity must be in (0, 1), --prune-epochs and --qat-epochs >= 1")
    steps = plan(a)
    total = sum(t for _, _, t in steps)
    for name, args, t in steps:
        print(f"{name:>18}: ~{t / 60:.0f} min  edgeclf export COPY {' '.join(args)}")
    print(f"estimated total ~{total / 60:.0f} min (+ an fp32 export if the copy has no fp32 files)")
    if a.dry_run:
        return
    work, res = start(a, "/tmp/edgeclf-prune-qat", total)
    res["steps"] = []
    m = manifest(work) if (work / "manifest.json").is_file() else {"artifacts": []}
    missing = [f for f in a.formats.split(",") if f not in fp32_sizes(m)]
    if missing:
        export(work, ["--formats", ",".join(missing), "--quantize", "none", "--allow-drop", *a.export_args.split()],
               work / "export-fp32.log", a.python)
    for name, args, _ in steps:
        r = export(work, args, work / f"export-{name.replace(' ', '-').replace('+', '-')}.log", a.python)
        m = manifest(work)
        cfg = r.pop("export_config") or {}
        rows = [row for f in files_of(name if "epochs" not in name else "prune", a)
                if (row := artifact_row(m, f, r["started_utc"])) is not None]
        res["steps"].append({"name": name, **r, "timings_s": cfg.get("timings_s"), "fine_tune_lr": cfg.get("fine_tune_lr"),
                             "kernel_sparsity": (cfg.get("sparsity") or {}).get("kernel_sparsity"), "artifacts": rows})
        res["float_top1_acc"] = m.get("float_top1_acc")
        res["fp32_size_bytes"] = fp32_sizes(m)
        res["verdict"] = verdict(res["steps"])
        write_atomic(a.out / "results.json", json.dumps(res, indent=2) + "\n")
        write_atomic(a.out / "README.md", readme(res))
    print(f"-> {a.out / 'results.json'}, {a.out / 'README.md'}")


if __name__ == "__main__":
    main()

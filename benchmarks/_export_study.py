"""Shared by benchmarks/prune_qat.py and benchmarks/calibration_study.py: copy a model directory,
run ``edgeclf export`` on the copy (one fresh process per step, timed), collect the manifest rows.

Only the standard library: the exports run in subprocesses, so this process never imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: CPU flags that decide int8 speed/exactness (docs/quantization.md), reported when present.
FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
         "amx_tile", "amx_int8", "asimddp")


def machine() -> dict:
    """CPU model, int8-relevant flags and core count from ``lscpu``; load average; date (UTC)."""
    info = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
    except (OSError, subprocess.CalledProcessError):
        pass
    flags = set(info.get("Flags", "").split())
    return {"cpu_model": info.get("Model name", platform.processor()), "arch": platform.machine(),
            "cpus": os.cpu_count(), "flags": [f for f in FLAGS if f in flags],
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "date_utc": datetime.now(timezone.utc).replace(microsecond=0).isoformat(), "python": sys.version.split()[0]}


def add_run_args(p) -> None:
    """The options every study shares: --python, --force, --dry-run (argparse parser ``p``)."""
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--force", action="store_true", help="replace an existing --work directory")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the time estimate only")


def start(a, default_work_root: str, estimate_s: float) -> tuple[Path, dict]:
    """Copy ``a.model_dir`` to ``a.work`` (default ``default_work_root/NAME``), create ``a.out`` and
    return (the copy, the results dict with machine, paths, settings and the time estimate)."""
    work = fresh_copy(a.model_dir, a.work or Path(default_work_root) / a.model_dir.name, a.force)
    a.out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(a).items() if k not in ("model_dir", "work", "out", "python")}
    return work, {"machine": machine(), "model_dir": str(a.model_dir), "work": str(work),
                  "settings": json.loads(json.dumps(settings, default=str)), "estimate_s": round(estimate_s)}


def fresh_copy(src: Path, work: Path, force: bool) -> Path:
    """Copy model directory ``src`` to ``work`` (the original is never written). An existing ``work``
    is an error unless ``force`` (then it is replaced)."""
    if not (src / "model.keras").is_file() or not (src / "config.json").is_file():
        sys.exit(f"Error: {src}: not an edgeclf model directory (model.keras, config.json)")
    if work.resolve() == src.resolve():
        sys.exit(f"Error: --work {work} is the model directory itself")
    if work.exists():
        if not force:
            sys.exit(f"Error: {work} exists (pass --force to replace it)")
        shutil.rmtree(work)
    shutil.copytree(src, work)
    return work


def export(work: Path, args: list[str], log: Path, python: str) -> dict:
    """``python -m edgeclf.cli export WORK ARGS`` in a fresh process; output to ``log``.

    Returns {"cmd", "started_utc", "exit_code", "wall_s", "error" (last stderr line when it failed),
    "export_config" (WORK/export_config.json as written by this run, or None)}.
    """
    started = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    cfg_path = work / "export_config.json"
    cfg_path.unlink(missing_ok=True)
    cmd = [python, "-m", "edgeclf.cli", "export", str(work), *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    print("$ edgeclf", " ".join(cmd[3:]), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    wall = round(time.perf_counter() - t0, 1)
    tail = log.read_text(errors="replace").strip().splitlines()
    err = next((line for line in reversed(tail) if line.startswith("Error")), tail[-1] if tail else "")
    print(f"  exit {p.returncode} in {wall} s" + (f": {err}" if p.returncode else ""), flush=True)
    return {"cmd": " ".join(["edgeclf", *cmd[3:]]), "started_utc": started, "exit_code": p.returncode, "wall_s": wall,
            "error": err if p.returncode else None,
            "export_config": json.loads(cfg_path.read_text()) if cfg_path.is_file() else None}


def manifest(work: Path) -> dict:
    return json.loads((work / "manifest.json").read_text())


def fp32_sizes(m: dict) -> dict[str, int]:
    """format -> size in bytes of the fp32 file of that format listed in manifest ``m``."""
    return {a["format"]: a["size_bytes"] for a in m["artifacts"] if a["precision"] == "fp32"}


def artifact_row(m: dict, file: str, since: str = "") -> dict | None:
    """The measured facts of ``file`` from manifest ``m``, with gzip / fp32-file ratios; None if absent
    or made before ``since`` (ISO-8601 UTC, as the manifest's ``created``: by an earlier run)."""
    a = next((x for x in m["artifacts"] if x["file"] == file), None)
    if a is None or a.get("created", "") < since:
        return None
    fp32 = fp32_sizes(m).get(a["format"])
    fp32_gz = next((x["size_gzip_bytes"] for x in m["artifacts"]
                    if x["precision"] == "fp32" and x["format"] == a["format"]), None)
    v = a.get("validation") or {}
    return {"file": file, "format": a["format"], "status": a["status"], "quantizer": a.get("quantizer"),
            "top1_acc": v.get("top1_acc"), "acc_drop_pp": v.get("acc_drop_pp"),
            "top1_agreement": v.get("top1_agreement"), "max_abs_prob_diff": v.get("max_abs_prob_diff"),
            "n_images": v.get("n_images"), "size_bytes": a["size_bytes"], "size_gzip_bytes": a["size_gzip_bytes"],
            "gzip_vs_fp32_file": round(a["size_gzip_bytes"] / fp32, 4) if fp32 else None,
            "gzip_vs_fp32_gzip": round(a["size_gzip_bytes"] / fp32_gz, 4) if fp32_gz else None,
            "sparsity": a.get("sparsity"),
            "int8_kernel_zero_fraction": (a.get("int8_weights") or {}).get("int8_kernel_zero_fraction")}


def int8_name(formats: list[str], sparsity: float = 0.0, qat: bool = False) -> list[str]:
    """Artifact names ``edgeclf export`` gives int8 files (ExportConfig.file_name)."""
    stem = "model" + (f"_pruned{round(sparsity * 100)}" if sparsity else "") + ("_qat" if qat else "")
    return [f"{stem}_int8.{f}" for f in formats]


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def fmt(x, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)

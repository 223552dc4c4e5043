"""Print the README table "edgeclf vs the original notebooks" from committed results files.

Usage: python benchmarks/notebook_table.py [RESULTS_ROOT]   (default benchmarks/results)

The notebooks' numbers are what the original notebooks state (not re-measured here); every
edgeclf row comes from ``<results>/<run>/training/metrics.json`` and ``config.json`` (written by
``edgeclf train``) and, for the CPU, the ``machine.json`` that ``edgeclf bench`` wrote beside it. A run
with ``<run>/tta/bench.json`` (``edgeclf bench DIR --tta``) gets a second row: its int8 TFLite file
with flip test-time augmentation, as LiteRT ran it in that bench. Reference rows (not edgeclf) come
from ``<results>/airbench-reference/*.json``, written by ``benchmarks/airbench_reference.py`` (issue 9's
fast-training reference run on the same JPEG folders), with the ``machine.json`` beside them.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from edgeclf._machine import cpu_id_label

# (label, top-1 as the notebook states it, what the notebook was)
NOTEBOOKS = (
    ("seed CNN notebook", "~82 %", "Keras CNN from scratch (claimed by the notebook)"),
    ("ResNet50 transfer notebook", "88.82 %", "ImageNet ResNet50 transfer learning (claimed by the notebook)"),
)
# results directories of edgeclf runs, in table order
RUNS = ("cifar10-cnn-small", "cifar10-cnn-w16", "cifar10-cnn-resnet9", "cifar10-cnn", "cifar10-cnn-kd", "cifar10-cnn-w40",
        "cifar10-cnn-airbench", "cifar10-cnn-45ep", "cifar10-cnn-45ep-cutout", "cifar10-cnn-45ep-ens-kd",
        "cifar10-cnn-45ep-nearest", "cifar10-cnn-budget", "cifar10-cnn-10ep-zen4", "cifar10-cnn-whiten",
        "cifar10-cnn-zen4", "cifar10-cnn-whiten-zen4",
        "cifar10-mobilenet_v2-r1", "cifar10-mobilenet_v2", "cifar10-mobilenet_v2-160",
        "cifar10-mobilenet_v2-trainbn", "cifar10-mobilenet_v2-trainbn-nearest",
        "cifar10-mobilenet_v2-trainbn-160", "cifar10-mobilenet_v2-trainbn-160-14ep", "cifar10-mobilenet_v2-zen4",
        "cifar10-mobilenet_v2-progressive-zen4", "cifar10-mobilenet_v2-zen4-s27")
# runs trained before their architecture was renamed: results dir -> today's --model name
# (round 1 and round 2's first `cnn` was the ResNet-9 layout, now `cnn-resnet9`)
RENAMED = {"cifar10-cnn-w16": "cnn-resnet9", "cifar10-cnn-resnet9": "cnn-resnet9"}
# distillation teachers by the path config.json records -> the results directory of that run (its row)
TEACHER_RUNS = {"/work/runs/s11/cifar10-cnn.trained": "cifar10-cnn-45ep",
                "/work/runs/s12/cifar10-cnn-cutout.trained": "cifar10-cnn-45ep-cutout"}


def _cpu(run_dir: Path) -> str:
    for path in (run_dir / "machine.json", run_dir / "training" / "machine.json"):
        if path.is_file():
            m = json.loads(path.read_text())
            flags = m.get("simd_flags", {})
            isa = "AVX-512+VNNI+BF16+AMX" if flags.get("amx_bf16") else "AVX-512+VNNI+BF16" if flags.get("avx512_bf16") else "AVX-512" if flags.get("avx512f") else (
                "AVX2 only" if flags.get("avx2") else "?")
            ident = cpu_id_label(m.get("cpu_id"), stepping=False)
            return f"{m.get('cpu_model', '?')}{' ' + ident if ident else ''} ({isa}), {m.get('usable_cores', '?')} cores"
    return "-"


def _command(cfg: dict) -> str:
    """The `edgeclf train` command of a run: the model options that apply to it and differ from the
    defaults (the registry says which apply), with the data and weights paths as in this repo."""
    from edgeclf.models import MODELS, ModelConfig
    from edgeclf.models.config import BEFORE_FIELD
    from edgeclf.train.config import TrainConfig

    model = {**BEFORE_FIELD, **cfg["model"]}  # what an older config.json was built with
    parts = ["edgeclf train", f"--model {model['name']}", "--data ../shared/datasets/cifar10-jpg", "--val-split 0"]
    defaults = ModelConfig(name=model["name"])
    for opt in sorted(MODELS[model["name"]].options & set(model)):
        if model[opt] != getattr(defaults, opt):
            value = ("../shared/weights/" + Path(model[opt]).name) if opt == "weights" else model[opt]
            parts.append(f"--{opt.replace('_', '-')} {value}")
    # a field missing from an older config.json had TrainConfig's default (e.g. train_bn: False)
    train_defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    spec = MODELS[model["name"]]
    # the training recipe and the model's training options (e.g. train_bn), where the run differs
    wanted = {**{k: train_defaults[k] for k in spec.options & set(train_defaults)}, **spec.recipe}
    for key, value in sorted(wanted.items()):
        have = cfg.get(key, train_defaults.get(key))
        if have != value and key not in ("mixed_precision", "time_budget_hours"):  # those are printed below
            flag = key.replace("_", "-")
            parts.append((f"--{flag}" if have else f"--no-{flag}") if isinstance(have, bool) else f"--{flag} {have}")
    if cfg.get("augment", {}).get("translate_px", 4) != 4:  # the CLI's --translate default
        parts.append(f"--translate {cfg['augment']['translate_px']}")
    if cfg.get("augment", {}).get("cutout_px"):
        parts.append(f"--cutout {cfg['augment']['cutout_px']}")
    if cfg.get("mixed_precision"):
        parts.append("--mixed-precision")
    if cfg.get("progressive_size"):
        parts.append(f"--progressive-size {cfg['progressive_size']}")
        fraction = cfg.get("progressive_fraction", train_defaults["progressive_fraction"])
        if fraction != train_defaults["progressive_fraction"]:
            parts.append(f"--progressive-fraction {fraction}")
    if cfg.get("time_budget_hours") != spec.recipe.get("time_budget_hours"):  # 0: none, where the recipe has one
        parts.append(f"--time-budget {cfg.get('time_budget_hours') or 0:g}")
    if cfg.get("distill"):  # the teacher by its model directory's name (its results are another row)
        d = cfg["distill"]
        teachers = [d["teacher"]] if isinstance(d["teacher"], str) else d["teacher"]  # a string before 2026-12-02
        parts += [f"--teacher {TEACHER_RUNS.get(t, Path(t).name)}" for t in teachers]
        parts += [f"--{flag} {d[key]}" for key, flag, default in (("alpha", "distill-alpha", 0.9),
                                                                 ("temperature", "temperature", 4.0))
                  if key in d and d[key] != default]
        if d.get("tta"):
            parts.append("--teacher-tta")
    return " ".join(parts)


def table(root: Path) -> str:
    """The Markdown table (one row per notebook claim and per results directory found)."""
    rows = ["| model | test top-1 (CIFAR-10 test, 10,000 images) | epochs | train wall time | train images/s "
            "| params / MACs per image | CPU | command |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, acc, what in NOTEBOOKS:
        rows.append(f"| {label} | {acc} | - | - | - | - | - | {what} |")
    rows += _reference_rows(root / "airbench-reference")
    for run in RUNS:
        d = root / run
        mpath, cpath = d / "training" / "metrics.json", d / "training" / "config.json"
        if not (mpath.is_file() and cpath.is_file()):
            continue
        m, cfg = json.loads(mpath.read_text()), json.loads(cpath.read_text())
        if run in RENAMED:
            m["model"] = cfg["model"]["name"] = RENAMED[run]
        secs, epochs = float(m["train_seconds"]), int(m["epochs_run"])
        ips = m["n_train"] * epochs / secs if secs else 0.0
        rows.append(f"| edgeclf `{m['model']}` ({run}) | **{m['top1_acc']:.2%}** | {epochs} | {secs:,.0f} s "
                    f"| {ips:,.0f} | {m['params'] / 1e6:.2f} M / {m['macs_per_image'] / 1e6:.0f} M | {_cpu(d)} "
                    f"| `{_command(cfg)}` |")
        tta = _tta_int8_top1(d / "tta" / "bench.json")
        if tta is not None:
            rows.append(f"| edgeclf `{m['model']}` ({run}), int8 TFLite + flip TTA | **{tta:.2%}** | {epochs} "
                        f"| {secs:,.0f} s | {ips:,.0f} | {m['params'] / 1e6:.2f} M / "
                        f"{2 * m['macs_per_image'] / 1e6:.0f} M (2 views) | {_cpu(d / 'tta')} "
                        f"| the model above; `edgeclf predict DIR IMAGES --tta` (`edgeclf bench DIR --tta`) |")
    return "\n".join(rows)


def _reference_rows(d: Path) -> list[str]:
    """Rows of the airbench94 reference runs in ``d`` (one per ``*.json``; none when ``d`` is missing)."""
    rows = []
    for path in sorted(d.glob("*.json")) if d.is_dir() else []:
        r = json.loads(path.read_text())
        if "test_top1" not in r:  # machine.json
            continue
        t = r["test_top1"]
        flags = (" --bf16" if r.get("bf16") else "") + (
            f" --activation {r['activation']}" if r.get("activation", "gelu") != "gelu" else "")
        rows.append(f"| airbench94 reference, PyTorch on the CPU ({d.name}/{path.name}; not edgeclf) "
                    f"| **{t['tta0']:.2%}**; {t['tta2']:.2%} with its mirror + translate TTA | {r['epochs']:g} "
                    f"| {r['training_s']:,.0f} s | {r['images_per_s']:,.0f} "
                    f"| {r['params'] / 1e6:.2f} M / {r['macs_per_image'] / 1e6:.0f} M | {_cpu(d)} "
                    f"| `python benchmarks/airbench_reference.py --data ../shared/datasets/cifar10-jpg{flags}` "
                    f"(94.01 % with TTA on the lossless CIFAR-10, GPU, mean of 1,000 runs) |")
    return rows


def _tta_int8_top1(path: Path) -> float | None:
    """Top-1 of the int8 TFLite row of an ``edgeclf bench --tta`` bench.json, or None (no such file/row)."""
    if not path.is_file():
        return None
    bench = json.loads(path.read_text())
    if not bench.get("config", {}).get("tta"):
        return None
    row = next((r for r in bench["rows"] if r["format"] == "tflite" and r["precision"] == "int8"), None)
    return row["top1_acc"] if row and row.get("top1_acc") is not None else None


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results")))

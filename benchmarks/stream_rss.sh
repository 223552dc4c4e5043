#!/usr/bin/env bash
# Streaming vs in-memory input (issue 13): peak RSS and images/s of `edgeclf train`.
#
# 1. Generates N (default 100,000) 224x224 JPEGs from the CIFAR-10 JPEG tree (make_stream_folder.py).
# 2. Records the in-memory path's size estimate for that folder at INPUT_SIZE.
# 3. `/usr/bin/time -v edgeclf train` ONE epoch on the streaming path: peak RSS, wall time, images/s.
# 4. On a SMALL-image subset that fits in memory (--limit SMALL), one epoch with --no-stream and one
#    with --stream: images/s of each.
# Results: $RESULTS/stream_rss.json and .md.
#
# Model and size: cnn-small (the notebook CNN) at --input-size 128, batch 128: the decoded folder at
# 128x128x3 is ~4.9 GiB (so the in-memory path would need ~10 GB at its peak). One epoch of 100k
# images should fit in 60 min on 2 cores: cnn-small at 128 px is 0.29 GFLOPs per image forward
# (~0.9 training), i.e. ~25 min at ~60 img/s, plus ~1 ms of JPEG decode + resize per image. This is
# an estimate, NOT measured here (the smoke run below is dominated by start-up); if the epoch is
# too slow, INPUT_SIZE=112 still gives an in-memory estimate above 3 GiB (3.8 GiB decoded).
#
#   bash benchmarks/stream_rss.sh                                 # the real run (the lead's machine)
#   N=200 TEST_N=60 SMALL=100 DATA=/tmp/s bash benchmarks/stream_rss.sh   # smoke test
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
PY=${PY:-$REPO/.venv/bin/python}
EDGECLF=${EDGECLF:-"$PY -m edgeclf.cli"}
SRC=${SRC:-$REPO/../shared/datasets/cifar10-jpg}
N=${N:-100000}
TEST_N=${TEST_N:-2000}
SMALL=${SMALL:-10000}
MODEL=${MODEL:-cnn-small}
INPUT_SIZE=${INPUT_SIZE:-128}
BATCH=${BATCH:-128}
DATA=${DATA:-/tmp/edgeclf-stream-224}
WORK=${WORK:-/tmp/edgeclf-stream-work}
RESULTS=${RESULTS:-$HERE/results/stream}
mkdir -p "$WORK" "$RESULTS"

$PY "$HERE/make_stream_folder.py" "$SRC" "$DATA" --n "$N" --test-n "$TEST_N" --size 224

# the in-memory path's estimate, from the library's own rule
$PY - "$DATA" "$INPUT_SIZE" > "$WORK/estimate.json" <<'PYEOF'
import json, sys
from edgeclf.data import DataConfig, estimate_decoded_bytes, use_streaming
from edgeclf.data.folders import plan_folders
size = int(sys.argv[2])
cfg = DataConfig(source=sys.argv[1], image_size=(size, size))
plan = plan_folders(cfg)
n = len(plan.files) + len(plan.test_files)
b = estimate_decoded_bytes(n, plan.size, 3)
stream, why = use_streaming(cfg, b)
print(json.dumps({"n_images": n, "input_size": size, "decoded_bytes": b,
                  "in_memory_peak_estimate_bytes": 2 * b, "auto_choice": "stream" if stream else "memory",
                  "why": why}))
PYEOF

run() {  # run NAME ARGS...: one epoch under /usr/bin/time -v
  local name=$1; shift
  rm -rf "$WORK/out/$name" "$WORK/out/.$name.partial"
  /usr/bin/time -v $EDGECLF train --model "$MODEL" --data "$DATA" --input-size "$INPUT_SIZE" --epochs 1 \
      --batch-size "$BATCH" --no-augment --val-split 0.02 --out "$WORK/out" --name "$name" "$@" \
      > "$WORK/$name.log" 2> "$WORK/$name.time"
}
run stream --stream
run small-memory --no-stream --limit "$SMALL"
run small-stream --stream --limit "$SMALL"

$PY - "$WORK" "$RESULTS" "$MODEL" "$BATCH" <<'PYEOF'
import json, re, sys
from pathlib import Path
work, results, model, batch = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
est = json.loads((work / "estimate.json").read_text())
rows = {}
for name in ("stream", "small-memory", "small-stream"):
    t = (work / f"{name}.time").read_text()
    m = json.loads((work / "out" / name / "metrics.json").read_text())
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", t).group(1)
    secs = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
    rows[name] = {"n_train": m["n_train"], "train_seconds": m["train_seconds"],
                  "train_images_per_s": round(m["n_train"] / m["train_seconds"], 1) if m["train_seconds"] else None,
                  "peak_rss_bytes": rss_kb * 1024, "wall_seconds": round(secs, 1)}
import datetime
from edgeclf.bench.machine import machine_facts
mach = machine_facts(threads=0)
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
out = {"model": model, "batch_size": batch, "epochs": 1, "date_utc": date, "machine": mach,
       "in_memory_estimate": est, "runs": rows}
(results / "stream_rss.json").write_text(json.dumps(out, indent=2) + "\n")
gib = 1024 ** 3
md = [f"# Streaming vs in-memory input: {model}, input {est['input_size']} px, batch {batch}, one epoch", "",
      f"Folder: {est['n_images']} JPEGs (224x224). In-memory path: {est['decoded_bytes'] / gib:.2f} GiB decoded, "
      f"~{est['in_memory_peak_estimate_bytes'] / gib:.2f} GiB at its peak (arrays + tf.data copy); "
      f"automatic choice: {est['auto_choice']} ({est['why']}).", "",
      f"`bash benchmarks/stream_rss.sh` (MODEL={model}, INPUT_SIZE={est['input_size']}), {date}, "
      f"{mach['cpu_model']}, {mach['logical_cores']} logical cores, flags: "
      f"{' '.join(f for f, on in mach['simd_flags'].items() if on)}.", "",
      "| run | train images | images/s (fit) | wall s | peak RSS GiB |", "| --- | ---: | ---: | ---: | ---: |"]
for name, r in rows.items():
    md.append(f"| {name} | {r['n_train']} | {r['train_images_per_s']} | {r['wall_seconds']} | "
              f"{r['peak_rss_bytes'] / gib:.2f} |")
(results / "stream_rss.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
PYEOF

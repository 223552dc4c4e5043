#!/usr/bin/env bash
# `make bench`: train (or reuse) the CIFAR-10 cnn and mobilenet_v2 models, export every format
# (if artifacts are missing), then benchmark each against its float original.
#
#   bash benchmarks/run.sh [DATA]
#
# Environment (all optional):
#   DATA          cifar10 (Keras download) or a local copy, e.g. ../shared/datasets/cifar10-jpg
#   MNV2_WEIGHTS  imagenet (Keras download) or a local .h5, e.g. ../shared/weights/mobilenet_v2_1.0_imagenet_no_top.h5
#   MODELS        models to run (default "cnn mobilenet_v2")
#   MODEL_ROOT    where model directories live (default export; directory = MODEL_ROOT/cifar10-<model>)
#   PRUNE         sparsity of the extra pruned int8 export (default 0.5; 0 = none)
#   THREADS       engine threads for the benchmark (default 1)
#   TRAIN_ARGS    extra `edgeclf train` options (e.g. "--epochs 1" for a smoke run)
#   BENCH_ARGS    extra `edgeclf bench` options (e.g. "--quick" or "--min-accuracy 0.8")
#   EDGECLF       the edgeclf command (default .venv/bin/edgeclf if present, else edgeclf)
#   RESULTS       results root (default benchmarks/results): RESULTS/<name>/{bench.md,bench.csv,
#                 bench.json,machine.json,accuracy_vs_latency.png,size.png}
#   WORK          scratch root (default benchmarks/work, git-ignored): worker logs, baseline_default.tflite
set -euo pipefail
cd "$(dirname "$0")/.."

DATA="${1:-${DATA:-cifar10}}"
MNV2_WEIGHTS="${MNV2_WEIGHTS:-imagenet}"
MODELS="${MODELS:-cnn mobilenet_v2}"
MODEL_ROOT="${MODEL_ROOT:-export}"
PRUNE="${PRUNE:-0.5}"
THREADS="${THREADS:-1}"
TRAIN_ARGS="${TRAIN_ARGS:-}"
BENCH_ARGS="${BENCH_ARGS:-}"
RESULTS="${RESULTS:-benchmarks/results}"
WORK="${WORK:-benchmarks/work}"
if [[ -z "${EDGECLF:-}" ]]; then
  if [[ -x .venv/bin/edgeclf ]]; then EDGECLF=.venv/bin/edgeclf; else EDGECLF=edgeclf; fi
fi

# the edge formats `edgeclf export` makes by default (edgeclf.runtime.manifest.DEFAULT_ARTIFACTS);
# any missing one triggers an export
PYTHON="$(dirname "$EDGECLF")/python"; [[ -x "$PYTHON" ]] || PYTHON=python3
DEFAULT_ARTIFACTS="$("$PYTHON" -c 'from edgeclf.runtime.manifest import DEFAULT_ARTIFACTS as d
print(" ".join(f"model_{p.value}.{f.value}" for f, p in d))')"

missing_artifacts() {  # dir -> 0 if any default artifact is missing
  local dir=$1 f
  [[ -f "$dir/manifest.json" ]] || return 0
  for f in $DEFAULT_ARTIFACTS; do [[ -f "$dir/$f" ]] || return 0; done
  return 1
}

status=0
for model in $MODELS; do
  name="cifar10-$model"
  dir="$MODEL_ROOT/$name"
  echo "== $name ($dir)"
  if [[ -f "$dir/model.keras" ]]; then
    echo "reusing $dir/model.keras"
  else
    extra=()
    [[ "$model" == mobilenet_v2 ]] && extra+=(--weights "$MNV2_WEIGHTS")
    # shellcheck disable=SC2086
    "$EDGECLF" train --model "$model" --data "$DATA" --name "$name" --out "$MODEL_ROOT" "${extra[@]}" $TRAIN_ARGS
  fi
  # An export that fails leaves its rows missing; bench reports them as "not exported".
  if missing_artifacts "$dir"; then
    "$EDGECLF" export "$dir" --data "$DATA" --allow-drop || echo "WARNING: export of $name failed (see above)"
  fi
  if [[ "$PRUNE" != 0 ]] && ! compgen -G "$dir/model_pruned*_int8.tflite" > /dev/null; then
    "$EDGECLF" export "$dir" --data "$DATA" --prune "$PRUNE" --quantize int8 --allow-drop \
      || echo "WARNING: pruned export of $name failed (see above)"
  fi
  # shellcheck disable=SC2086
  "$EDGECLF" bench "$dir" --data "$DATA" --threads "$THREADS" --out "$RESULTS/$name" \
    --work-dir "$WORK/$name" $BENCH_ARGS || status=$?
done
exit "$status"

#!/bin/bash
while ! grep -q "^done" /work/runs/s23/export.log 2>/dev/null; do sleep 15; done
cd /tmp
export PYTHONPATH=/work/wt-s23 TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
D=/work/shared/datasets/cifar10-jpg
P="/work/main/.venv/bin/python /work/wt-s23/benchmarks/train_step_probe.py --data $D"
for a in "" "--jit-compile" "--inter-op 1" "--batch-size 128" "--fine-tune-layers 127" ""; do
  echo "== $a" >> /work/runs/s23/probe.txt
  $P $a >> /work/runs/s23/probe.txt 2>> /work/runs/s23/probe.err || echo "failed $?" >> /work/runs/s23/probe.txt
done
echo done >> /work/runs/s23/probe.txt

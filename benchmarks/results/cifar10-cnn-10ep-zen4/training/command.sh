#!/bin/bash
# cnn, default recipe, 10 epochs (airbench94's 9.9), all 50,000 CIFAR-10 JPEG training images
cd /tmp
export TF_USE_LEGACY_KERAS=1
/usr/bin/time -v -o /work/runs/s29/cnn10_time_v.txt /work/main/.venv/bin/edgeclf train --model cnn \
  --data /work/shared/datasets/cifar10-jpg --val-split 0 --epochs 10 --out /work/runs/s29 --name cnn-10ep

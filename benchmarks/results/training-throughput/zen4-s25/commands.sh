#!/bin/bash
# session 25 (2026-12-04), 2-vCPU AMD EPYC Zen 4, nothing else running; from the repository root
D=../shared/datasets/cifar10-jpg
# op profile: 10 untimed + 20 timed steps on 2,000 images, then 5 steps under TensorFlow's profiler
python benchmarks/train_step_probe.py --data $D --steps 20 --warmup 10 --limit 2000 --trace /tmp/trace > op_profile.txt
# input size: the fine-tune step at 128 px against 160 px
for s in 128 160; do python benchmarks/train_step_probe.py --data $D --img-size $s --steps 40 --warmup 15 --limit 4000; done > probe_img_size.txt

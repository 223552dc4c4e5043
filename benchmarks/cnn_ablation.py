"""Small-subset ablation of the ``cnn`` layouts (benchmarks/results/cifar10-cnn/ablation.md).

Usage: python benchmarks/cnn_ablation.py {cnn,cnn-resnet9} N_TRAIN EPOCHS [LR]

Trains the registered model (dropout 0, as in the measured runs) on a fixed random subset of
N_TRAIN CIFAR-10 JPEG training images (``../shared/datasets/cifar10-jpg``, decoded once and cached
in ``/tmp/cifar10-jpg.npz``) with the cnn recipe through ``edgeclf.train.fit``, then prints one JSON
line: test top-1 on the full 10,000-image test set, wall seconds and images/s of the fit.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from edgeclf._keras import set_seed
from edgeclf.data import load_dataset
from edgeclf.data.config import AugmentConfig, DataConfig
from edgeclf.models import ModelConfig, build_model
from edgeclf.models.flops import count_macs
from edgeclf.train.fit import FitPlan, fit

CACHE = "/tmp/cifar10-jpg.npz"


def main() -> None:
    variant, n, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    lr = float(sys.argv[4]) if len(sys.argv) > 4 else 0.2
    if not os.path.exists(CACHE):
        d = load_dataset(DataConfig(source="../shared/datasets/cifar10-jpg", val_split=0.0), progress=False)
        np.savez(CACHE, xtr=d.x_train, ytr=d.y_train, xte=d.x_test, yte=d.y_test)
    z = np.load(CACHE)
    idx = np.random.default_rng(0).permutation(len(z["xtr"]))[:n]
    set_seed(42)
    model = build_model(ModelConfig(name=variant, dropout=0.0), (32, 32, 3), 10)
    plan = FitPlan(optimizer="sgd", lr=lr, batch_size=512, weight_decay=5e-3, label_smoothing=0.1,
                   warmup_fraction=0.15, augment=AugmentConfig(flip=True, translate_px=4), seed=42)
    t = time.time()
    fit(model, z["xtr"][idx], z["ytr"][idx], 10, plan, epochs)
    secs = time.time() - t
    acc = float((model.predict(z["xte"], batch_size=500, verbose=0).argmax(1) == z["yte"]).mean())
    print(json.dumps({"variant": variant, "params": model.count_params(), "macs": count_macs(model), "n": n,
                      "epochs": epochs, "lr": lr, "acc": acc, "s": round(secs, 1), "img_s": round(n * epochs / secs, 1)}))


if __name__ == "__main__":
    main()

"""Top-1 of a QAT-wrapped model before any fine-tuning, after the activation-range pass
(``edgeclf.export.qat.wrap_for_qat`` + ``_calibrate_ranges``): per-channel depthwise kernels (edgeclf's
default) vs tfmot's per-tensor depthwise, both with BatchNorm folding. 300 test images, 256 training
images for the range pass (``--limit 1500`` stratified subset, seed 0).

Usage: python benchmarks/qat_start_accuracy.py MODEL_DIR DATA_DIR
"""
import sys
import time

import numpy as np

from edgeclf.data import DataConfig, load_dataset
from edgeclf.export.qat import _calibrate_ranges, wrap_for_qat
from edgeclf.models.io import load_keras_model

D, DATA = sys.argv[1], sys.argv[2]
ds = load_dataset(DataConfig(source=DATA, val_split=0.0, seed=0, limit=1500), progress=False)
x, y = ds.x_test[:300].astype(np.float32), np.asarray(ds.y_test[:300])
cal = ds.x_train[:256].astype(np.float32)
model = load_keras_model(D)
print("float", float(np.mean(model.predict(x, verbose=0).argmax(1) == y)), flush=True)
for pcd in (True, False):
    t = time.time()
    q = wrap_for_qat(model, per_channel_depthwise=pcd)
    _calibrate_ranges(q, cal)
    acc = float(np.mean(q.predict(x, verbose=0).argmax(1) == y))
    print(f"per_channel_depthwise={pcd}: QAT model top-1 before fine-tuning {acc:.3f} ({time.time()-t:.0f} s)", flush=True)

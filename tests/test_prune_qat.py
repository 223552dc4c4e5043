"""Pruning + quantization-aware training: the prune-preserving QAT path (PQAT) keeps the pruned zeros
in the int8 files, and gzip turns them into a smaller download; plain QAT would lose them.

Real fine-tuning and conversion of the tiny session model (``cnn`` width 4), no mocks. The
fine-tuning rate is raised to Adam 1e-2 so that weights really move during QAT: at the default
rate (10 % of the training peak) a weight that left zero could still round back to int8 zero, and
the contrast with plain QAT would prove nothing.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

TARGET = 0.75
LR = 1e-2


def _kernel_zero_fractions(path) -> list[float]:
    """Zero fraction of every int8 Conv/Dense kernel in a ``.tflite`` or ``.onnx`` file, except the
    first conv's (3 input channels: left dense by design), read from the file's weight tensors."""
    from edgeclf.export import artifacts

    weights = artifacts._tflite_weights(path) if path.suffix == ".tflite" else artifacts._onnx_weights(path)
    kernels = [w for w in weights if w.dtype == np.int8 and w.ndim >= 2]
    # TFLite conv kernels are (out, kh, kw, in), ONNX ones (out, in, kh, kw): skip the image-reading conv
    skip = [w for w in kernels if w.ndim == 4 and (w.shape[-1] == 3 if path.suffix == ".tflite" else w.shape[1] == 3)]
    assert len(skip) == 1, [w.shape for w in kernels]
    return [float(np.mean(w == 0)) for w in kernels if w is not skip[0]]


@pytest.fixture(scope="module")
def pqat(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny model exported twice: dense fp32 + int8 TFLite, then pruned 75 % + QAT int8
    (TFLite and ONNX). Returns (dir, ExportResult of the second export)."""
    from edgeclf.export import ExportConfig, Format, Precision, export_model

    d = tmp_path_factory.mktemp("pqat") / "tiny"
    shutil.copytree(tiny_model_dir, d)
    export_model(d, ExportConfig(formats=(Format.TFLITE,), precisions=(Precision.FP32, Precision.INT8),
                                 calibration_samples=30, allow_drop=True), progress=False)
    cfg = ExportConfig(formats=(Format.TFLITE, Format.ONNX), precisions=(Precision.INT8,), prune_sparsity=TARGET,
                       prune_epochs=2, qat=True, qat_epochs=1, fine_tune_lr=LR, calibration_samples=30,
                       allow_drop=True)
    return d, export_model(d, cfg, progress=False)


def test_pqat_int8_files_keep_the_target_sparsity(pqat):
    d, result = pqat
    assert result.fine_tune_lr == {"prune": LR, "qat": LR}
    assert {"load model and data", "model_pruned75_qat_int8.tflite: convert + validate"} <= set(result.timings_s)
    names = {a.file: a for a in result.artifacts}
    assert set(names) == {"model_pruned75_qat_int8.tflite", "model_pruned75_qat_int8.onnx"}
    for name, entry in names.items():
        fractions = _kernel_zero_fractions(d / name)
        assert len(fractions) >= 5 and min(fractions) >= TARGET - 0.01, (name, fractions)
        assert entry.quantization_aware and entry.int8_weights.int8_kernel_zero_fraction >= 0.7
    assert result.sparsity["kernel_sparsity"] >= 0.7


def test_pqat_gzip_shrinks_with_the_zeros(pqat):
    from edgeclf._io import gzip_size

    d, result = pqat
    dense, sparse = gzip_size(d / "model_int8.tflite"), gzip_size(d / "model_pruned75_qat_int8.tflite")
    # 25 % non-zero int8 values plus the zero/non-zero pattern (~0.8 bit per weight) of ~8 bits dense
    assert sparse < 0.6 * dense, (sparse, dense)
    entry = next(a for a in result.artifacts if a.file.endswith(".tflite"))
    assert result.gzip_ratio(entry) == round(sparse / (d / "model_fp32.tflite").stat().st_size, 4)
    assert result.gzip_ratio(next(a for a in result.artifacts if a.file.endswith(".onnx"))) is None  # no fp32 ONNX


def test_plain_qat_of_a_pruned_model_loses_the_zeros(tiny_model_dir, tmp_path):
    """The contrast: the same pruning, then QAT without the prune-preserving scheme."""
    from edgeclf.data import open_dataset
    from edgeclf.export import Precision
    from edgeclf.export.prune import FineTune, prune_model
    from edgeclf.export.qat import quantize_aware
    from edgeclf.export.quantize import convert_keras
    from edgeclf.models.io import load_keras_model
    from edgeclf.train.config import load_config

    cfg = load_config(tiny_model_dir)
    ds = open_dataset(cfg.data, channels=3, progress=False)
    ft = FineTune(train=ds.train, num_classes=ds.num_classes, batch_size=32, lr=LR, label_smoothing=0.0)
    pruned, report = prune_model(load_keras_model(tiny_model_dir), ft, TARGET, 2)
    assert report.kernel_sparsity >= 0.7
    rep = ds.train.sample(30, 0)[0].astype(np.float32)
    out = tmp_path / "plain_qat_int8.tflite"
    out.write_bytes(convert_keras(quantize_aware(pruned, ft, 1, preserve_sparsity=False), Precision.INT8, rep,
                                  quantization_aware=True))
    assert np.mean(_kernel_zero_fractions(out)) < 0.5

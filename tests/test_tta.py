"""Flip test-time augmentation (``--tta``): the runtime Classifier, ``edgeclf predict --tta`` and the
bench workers all average each image's and its horizontal mirror's class probabilities."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import LABELS, build_models, write_labelled_folder
from click.testing import CliRunner

from edgeclf.bench._worker_base import Phase
from edgeclf.bench.config import TimingConfig
from edgeclf.cli.runtime import predict_cmd
from edgeclf.runtime import load_classifier
from edgeclf.runtime.base import Classifier, TensorInfo, softmax
from edgeclf.runtime.manifest import InputSpec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory)


class _TopLeftLogits(Classifier):
    """A fake engine whose logits are the top-left pixel; records the batch sizes it was called with."""

    engine = "fake"

    def __init__(self, batch: int) -> None:
        super().__init__(Path("fake.model"))
        self._in = TensorInfo("x", (batch, 4, 4, 3), np.dtype(np.float32))
        self._out = TensorInfo("y", (batch, 3), np.dtype(np.float32))
        self.calls: list[int] = []

    def _run(self, x):
        self.calls.append(x.shape[0])
        return x[:, 0, 0, :].copy()


@pytest.mark.parametrize(("batch", "calls"), [(-1, [4]), (1, [1] * 4)])
def test_tta_mirrors_the_width_axis_and_averages_probabilities(batch, calls):
    x = np.zeros((2, 4, 4, 3), np.float32)
    x[:, 0, 0] = [4.0, 0.0, 0.0]   # what the model sees: class 0
    x[:, 0, 3] = [0.0, 0.0, 4.0]   # the mirror's top-left pixel: class 2
    x[:, 3, 0] = [0.0, 4.0, 0.0]   # a vertical flip would see class 1
    clf = _TopLeftLogits(batch).bind(InputSpec(4, 4, 3), LABELS)
    plain = clf.predict(x)
    np.testing.assert_allclose(plain, softmax(np.array([[4.0, 0, 0]] * 2)), rtol=1e-6)
    clf.tta, clf.calls = True, []
    probs = clf.predict(x)
    want = (softmax(np.array([[4.0, 0, 0]] * 2)) + softmax(np.array([[0, 0, 4.0]] * 2))) / 2
    np.testing.assert_allclose(probs, want, rtol=1e-6)
    assert probs[:, 0] == pytest.approx(probs[:, 2]) and clf.calls == calls
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("artifact", ["model_int8.tflite", "model_fp32.onnx"])
def test_real_model_tta_is_the_mean_of_image_and_mirror(models, artifact):
    path = models.model_dir / artifact
    plain, tta = load_classifier(path), load_classifier(path, tta=True)
    assert tta.tta and not plain.tta
    x = models.images.astype(np.float32)
    want = (plain.predict(x) + plain.predict(np.ascontiguousarray(x[:, :, ::-1]))) / 2
    got = tta.predict(x)
    np.testing.assert_allclose(got, want, atol=1e-6)
    if artifact.endswith(".onnx"):  # float: the 3x3 kernels are not mirror-symmetric, so the views differ
        assert np.abs(got - plain.predict(x)).max() > 1e-6


def test_predict_cli_tta_prints_the_averaged_probabilities(models, tmp_path):
    folder = write_labelled_folder(tmp_path / "imgs", models.images[:6], models.labels_true[:6])
    r = CliRunner().invoke(predict_cmd, [str(models.model_dir / "model_fp32.onnx"), str(folder), "--tta",
                                         "--top-k", "3", "--json", "-"])
    assert r.exit_code == 0, r.output
    clf = load_classifier(models.model_dir / "model_fp32.onnx", tta=True)
    report = json.loads(r.stdout)
    assert report["tta"] is True and "with flip TTA" in r.stderr
    for row in report["predictions"]:
        i = int(Path(row["file"]).stem.split("_")[1])
        probs = clf.predict(models.images[i:i + 1].astype(np.float32))[0]
        for entry in row["top_k"]:
            assert entry["prob"] == pytest.approx(probs[LABELS.index(entry["label"])], abs=1e-5)


def _spec(tmp_path: Path, kind: str, path: Path, images: np.ndarray, tta: bool) -> dict:
    np.save(tmp_path / "images.npy", images)
    return {"kind": kind, "path": str(path), "input": InputSpec(32, 32, 3).to_dict(), "labels": list(LABELS),
            "precision": "fp32", "threads": 1, "batch_size": 4, "tta": tta,
            "timing": dataclasses.asdict(TimingConfig.quick()), "images": str(tmp_path / "images.npy"),
            "accuracy": True, "probs_out": str(tmp_path / f"{kind}{tta}.npy"),
            "result_out": str(tmp_path / f"{kind}{tta}.json")}


def test_bench_runtime_worker_tta(models, tmp_path):
    from edgeclf.bench.worker import run_runtime

    path = models.model_dir / "model_int8.tflite"
    spec = _spec(tmp_path, "runtime", path, models.images[:8], tta=True)
    phase = Phase(Path(spec["result_out"]))
    run_runtime(spec, phase)
    got = np.load(spec["probs_out"])
    want = load_classifier(path, tta=True).predict(models.images[:8].astype(np.float32))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert phase.result["throughput_mode"] == "one call of batch 8"  # --batch-size 4, each image and its mirror


def test_bench_keras_worker_tta(tiny_model_dir, tmp_path):
    """The float-original row (its own process: the worker sets TensorFlow's thread pools)."""
    from edgeclf.models.io import load_keras_model

    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3)).astype(np.uint8)
    model = load_keras_model(tiny_model_dir)
    x = images.astype(np.float32)
    plain = np.asarray(model(x, training=False))
    mirrored = np.asarray(model(np.ascontiguousarray(x[:, :, ::-1]), training=False))
    spec = _spec(tmp_path, "keras-function", tiny_model_dir, images, tta=True)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "edgeclf.bench.worker", str(spec_path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(spec["probs_out"]), (plain + mirrored) / 2, atol=1e-5)
    assert np.abs(plain - mirrored).max() > 1e-4  # the two views differ, so the mean is not either one

"""edgeclf.runtime: backends vs the Keras original, quantization, metadata, loader rules, no TensorFlow."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import LABELS, SIZE, build_models

from edgeclf.preprocess import to_model_batch
from edgeclf.runtime import ModelLoadError, load_classifier
from edgeclf.runtime.base import Classifier, TensorInfo
from edgeclf.runtime.loader import NO_LABELS, NO_SIZE
from edgeclf.runtime.manifest import InputSpec
from edgeclf.runtime.tflite_metadata import add_metadata, list_metadata, read_metadata

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return build_models(tmp_path_factory)


def _batch(models):
    return to_model_batch(models.images, SIZE, SIZE)


# -- no TensorFlow in the runtime ---------------------------------------------------------------
def test_runtime_imports_without_tensorflow():
    code = ("import sys, edgeclf.runtime, edgeclf.cli.runtime, edgeclf.runtime.camera, edgeclf.runtime.report, "
            "edgeclf.runtime.litert, edgeclf.runtime.ort, edgeclf.runtime.tflite_metadata; "
            "bad = [m for m in ('tensorflow', 'tf_keras', 'keras') if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# -- backends agree with Keras ----------------------------------------------------------------
@pytest.mark.parametrize("artifact", ["model_fp32.tflite", "model_fp32.onnx"])
def test_float_backends_match_keras(models, artifact):
    clf = load_classifier(models.model_dir / artifact)
    probs = clf.predict(_batch(models))
    assert probs.dtype == np.float32 and probs.shape == (len(models.images), 3)
    np.testing.assert_array_equal(probs.argmax(1), models.keras_probs.argmax(1))
    np.testing.assert_allclose(probs, models.keras_probs, atol=1e-4)
    assert clf.precision == "fp32" and clf.labels == LABELS


def test_int8_tflite_io_and_agreement(models):
    clf = load_classifier(models.model_dir / "model_int8.tflite", threads=1)
    assert clf.engine == "litert" and clf.precision == "int8" and clf.input_dtype == np.int8
    assert clf._in.scale and clf._out.scale  # read from the model itself
    probs = clf.predict(_batch(models))
    assert probs.dtype == np.float32 and probs.min() >= 0
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=0.02)  # dequantized softmax output
    agree = np.mean(probs.argmax(1) == models.keras_probs.argmax(1))
    assert agree >= 0.9, agree
    # quantization is x / scale + zero_point, rounded and clipped
    x = np.array([[[[0.0, 127.5, 255.0]]]], dtype=np.float32)
    s, zp = clf._in.scale, clf._in.zero_point
    expected = np.clip(np.rint(x / s) + zp, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(clf._to_model_dtype(x), expected)


def test_model_dir_default_and_named_artifact(models):
    assert load_classifier(models.model_dir).path.name == "model_int8.tflite"
    clf = load_classifier(models.model_dir, artifact="model_fp32.onnx")
    assert clf.engine == "onnxruntime"
    with pytest.raises(ModelLoadError, match="no artifact 'nope.onnx'"):
        load_classifier(models.model_dir, artifact="nope.onnx")


def test_classify_top_k(models):
    clf = load_classifier(models.model_dir)
    out = clf.classify(list(models.images[:4]), top_k=2)
    assert len(out) == 4 and all(len(r) == 2 for r in out)
    assert all(r[0][1] >= r[1][1] and r[0][0] in LABELS for r in out)
    big = np.repeat(np.repeat(models.images[0], 3, axis=0), 3, axis=1)  # 96x96 is resized to 32x32
    assert clf.classify([big], top_k=5)[0][0][0] in LABELS


# -- metadata reading/writing ------------------------------------------------------------------
def test_tflite_metadata_roundtrip_keeps_model_identical(models):
    from ai_edge_litert.interpreter import Interpreter

    bare = (models.bare_dir / "model_int8.tflite").read_bytes()
    assert read_metadata(bare, "edgeclf") is None
    tagged = add_metadata(bare, "edgeclf", b'{"a": 1}')
    assert tagged[4:8] == b"TFL3"
    assert read_metadata(tagged, "edgeclf") == b'{"a": 1}'
    assert set(list_metadata(bare)) < set(list_metadata(tagged))  # converter's own entries kept
    retagged = add_metadata(tagged, "edgeclf", b'{"a": 2}')  # replaced, not duplicated
    assert read_metadata(retagged, "edgeclf") == b'{"a": 2}' and list_metadata(retagged).count("edgeclf") == 1

    x = to_model_batch(models.images[:8], SIZE, SIZE)
    outs = []
    for blob in (bare, retagged):
        it = Interpreter(model_content=blob)
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        s, zp = inp["quantization"]
        it.resize_tensor_input(inp["index"], list(x.shape))
        it.allocate_tensors()
        it.set_tensor(inp["index"], np.clip(np.rint(x / s) + zp, -128, 127).astype(np.int8))
        it.invoke()
        outs.append(it.get_tensor(out["index"]).copy())
    np.testing.assert_array_equal(outs[0], outs[1])
    with pytest.raises(ValueError, match="TFL3"):
        read_metadata(b"not a model at all", "edgeclf")


def test_onnx_embedded_metadata_alone(models, tmp_path):
    lone = tmp_path / "lone.onnx"  # no manifest next to it: the embedded metadata must do
    shutil.copy(models.model_dir / "model_fp32.onnx", lone)
    clf = load_classifier(lone)
    assert clf.labels == LABELS and clf.input_spec.height == SIZE


def test_newer_embedded_metadata_is_refused(models, tmp_path):
    import onnx

    from edgeclf.runtime.manifest import SCHEMA_VERSION

    proto = onnx.load(str(models.model_dir / "model_fp32.onnx"))
    (prop,) = [p for p in proto.metadata_props if p.key == "edgeclf"]
    meta = json.loads(prop.value)
    meta["schema_version"] = SCHEMA_VERSION + 1
    prop.value = json.dumps(meta)
    lone = tmp_path / "newer.onnx"
    onnx.save(proto, str(lone))
    with pytest.raises(ModelLoadError, match=f"schema_version {SCHEMA_VERSION + 1} is newer than this edgeclf") as exc:
        load_classifier(lone)
    assert str(exc.value).startswith(f"{lone}: embedded 'edgeclf' metadata")


# -- spec resolution order -----------------------------------------------------------------------
def test_no_metadata_size_from_shape_labels_needed(models, caplog):
    """A bare model: the size comes from its fixed input shape; labels are never guessed."""
    for name in ("model_int8.tflite", "model_fp32.onnx"):
        with pytest.raises(ModelLoadError, match=re.escape(NO_LABELS)):
            load_classifier(models.bare_dir / name)
        caplog.clear()
        clf = load_classifier(models.bare_dir / name, labels_file=models.bare_dir / "labels.txt")
        assert (clf.input_spec.height, clf.input_spec.width, clf.input_spec.channels) == (SIZE, SIZE, 3)
        assert "declares no input normalisation" in caplog.text  # fed 0-255, said out loud
        agree = np.mean(clf.predict(_batch(models)).argmax(1) == models.keras_probs.argmax(1))
        assert agree >= 0.9 and clf.labels == LABELS
        clf = load_classifier(models.bare_dir / name, labels_file=models.bare_dir / "labels.txt", mean=(0.0,))
        assert clf.input_spec.mean == (0.0,)


def test_dynamic_size_without_metadata_needs_input_size(models, tmp_path):
    import onnx

    proto = onnx.load(str(models.bare_dir / "model_fp32.onnx"))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_param, dims[2].dim_param = "height", "width"
    dyn = tmp_path / "dynamic.onnx"
    onnx.save(proto, str(dyn))
    labels = models.bare_dir / "labels.txt"
    with pytest.raises(ModelLoadError, match="pass --input-size") as exc:
        load_classifier(dyn, labels_file=labels)
    assert str(exc.value) == f"{dyn}: {NO_SIZE}"
    clf = load_classifier(dyn, labels_file=labels, input_size=(SIZE, SIZE))
    np.testing.assert_allclose(clf.predict(_batch(models)), models.keras_probs, atol=1e-4)


def test_manifest_next_to_file_beats_embedded(models, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(models.model_dir, d)
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["labels"] = ["r", "g", "b"]
    (d / "manifest.json").write_text(json.dumps(manifest))
    assert load_classifier(d / "model_int8.tflite").labels == ["r", "g", "b"]
    (d / "mine.txt").write_text("x\ny\nz\n")  # explicit beats both
    assert load_classifier(d / "model_int8.tflite", labels_file=d / "mine.txt").labels == ["x", "y", "z"]


def test_contradictory_options_are_refused(models, tmp_path):
    (tmp_path / "four.txt").write_text("a\nb\nc\nd\n")
    with pytest.raises(ModelLoadError, match="3 classes but 4 labels"):
        load_classifier(models.model_dir / "model_int8.tflite", labels_file=tmp_path / "four.txt")
    with pytest.raises(ModelLoadError, match="height is 32 in the model but 64"):
        load_classifier(models.model_dir / "model_int8.tflite", input_size=(64, 64))
    with pytest.raises(ModelLoadError, match="onnx models only"):
        load_classifier(models.model_dir / "model_int8.tflite", providers=["CPUExecutionProvider"])
    with pytest.raises(ModelLoadError, match="not available"):
        load_classifier(models.model_dir / "model_fp32.onnx", providers=["NoSuchExecutionProvider"])


@pytest.mark.parametrize("name,content,match", [
    ("junk.tflite", b"hello, I am text", "not a TFLite model"),
    ("trunc.tflite", None, "LiteRT cannot load"),
    ("junk.onnx", b"\x00\x01garbage" * 10, "onnxruntime cannot load"),
    ("notes.txt", b"text", "unsupported model format"),
    ("missing.tflite", "absent", "no such file"),
])
def test_bad_model_files_give_one_line_errors(models, tmp_path, name, content, match):
    path = tmp_path / name
    if content is None:
        path.write_bytes((models.model_dir / "model_int8.tflite").read_bytes()[:200])
    elif content != "absent":
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=match) as exc:
        load_classifier(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


# -- engine-independent logic with a fake engine ---------------------------------------------------
class _FakeEngine(Classifier):
    """Returns fixed logits; records the batch sizes it was called with."""

    engine = "fake"

    def __init__(self, batch, out_dtype=np.float32, out_q=(None, None)):
        super().__init__(Path("fake.model"))
        self._in = TensorInfo("x", (batch, 4, 4, 3), np.dtype(np.float32))
        self._out = TensorInfo("y", (batch, 3), np.dtype(out_dtype), *out_q)
        self.calls = []

    def _run(self, x):
        self.calls.append(x.shape[0])
        logits = np.stack([x[:, 0, 0, c] for c in range(3)], axis=1)
        if self._out.quantized:
            return np.clip(np.rint(logits / self._out.scale) + self._out.zero_point, 0, 255).astype(np.uint8)
        return logits


def test_fixed_batch_one_is_looped_and_logits_get_softmax():
    clf = _FakeEngine(batch=1).bind(InputSpec(4, 4, 3), LABELS)
    x = np.zeros((5, 4, 4, 3), np.float32)
    x[:, 0, 0] = [-3.0, 0.0, 2.0]  # logits with negatives
    probs = clf.predict(x)
    assert clf.calls == [1] * 5
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert (probs.argmax(1) == 2).all()
    dyn = _FakeEngine(batch=-1).bind(InputSpec(4, 4, 3), LABELS)
    dyn.predict(x)
    assert dyn.calls == [5]


def test_probabilities_pass_through_and_uint8_output_is_dequantized():
    clf = _FakeEngine(batch=-1, out_dtype=np.uint8, out_q=(1 / 256, 0)).bind(InputSpec(4, 4, 3), LABELS)
    x = np.zeros((2, 4, 4, 3), np.float32)
    x[:, 0, 0] = [0.25, 0.25, 0.5]  # already probabilities: no softmax
    np.testing.assert_allclose(clf.predict(x), [[0.25, 0.25, 0.5]] * 2, atol=1 / 256)


def test_mean_std_and_lut_match_prepare_batch():
    clf = _FakeEngine(batch=-1).bind(InputSpec(4, 4, 3, mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 8.0)), LABELS)
    img = np.random.default_rng(0).integers(0, 256, (1, 4, 4, 3)).astype(np.uint8)
    want = clf.prepare_batch(img.astype(np.float32))
    np.testing.assert_allclose(want[0, 0, 0], (img[0, 0, 0] - [1, 2, 3]) / [2, 4, 8], rtol=1e-6)
    lut = clf.uint8_lut()
    got = np.stack([lut[img[..., c], 0, c] for c in range(3)], axis=-1)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="expected images of shape"):
        clf.predict(np.zeros((1, 5, 5, 3), np.float32))


def test_uint8_input_with_its_implied_normalisation_gets_pixels_as_they_are():
    """mean = zero_point, std = 1 / scale (what the loader takes for a uint8 input nobody describes):
    q = round(((p - mean) / std) / scale) + zero_point = p, the MediaPipe / Task Library convention."""
    class _Uint8In(_FakeEngine):
        def __init__(self):
            super().__init__(batch=-1)
            self._in = TensorInfo("x", (-1, 4, 4, 3), np.dtype(np.uint8), 0.0078125, 128)  # MobileNet-quant style

    clf = _Uint8In().bind(InputSpec(4, 4, 3, mean=(128.0,), std=(128.0,)), LABELS)
    px = np.tile(np.arange(256, dtype=np.float32)[:48].reshape(1, 4, 4, 3), (1, 1, 1, 1))
    np.testing.assert_array_equal(clf.prepare_batch(px), px.astype(np.uint8))
    np.testing.assert_array_equal(clf.uint8_lut()[:, 0, 0], np.arange(256))

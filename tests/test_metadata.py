"""Standard TFLite Model Metadata in exported files, MediaPipe Tasks running them, zero-flag third-party
models, --int8-io choices, and quiet TensorFlow logs (real `edgeclf export` of the session's tiny model)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_CLASSES

from edgeclf.cli.runtime import predict_cmd
from edgeclf.runtime import load_classifier
from edgeclf.runtime.tflite_metadata import list_metadata
from edgeclf.runtime.tflite_model_metadata import associated_files, read_standard_metadata

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("cuInit", "oneDNN", "absl::InitializeLog", "cudart_stub", "tf.lite.Interpreter is deprecated",
         "XNNPACK", "fully_quantize", "Statistics for quantized inputs", "I0000", "E0000", "W0000")


def _quiet_env() -> dict:
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the conftest sets it; test the CLI's own default
    return env


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """A real `edgeclf export` (subprocess, default logging) of the tiny model: fp32 + int8 .tflite."""
    d = tmp_path_factory.mktemp("meta") / "tiny"
    shutil.copytree(tiny_model_dir, d)
    r = subprocess.run([sys.executable, "-m", "edgeclf.cli", "export", str(d), "--formats", "tflite",
                        "--quantize", "none,int8", "--val-samples", "30", "--calibration-samples", "32",
                        # these tests read the post-training model_int8.tflite and its metadata: no accuracy gate
                        # (one of 30 images is 3.3 points, so one net int8 flip of a valid tiny model would fail
                        # the default 1-point gate, and --auto-qat would then replace the file)
                        "--max-accuracy-drop", "100", "--no-auto-qat"],
                       cwd=ROOT, env=_quiet_env(), capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    return d, r


def _test_files(tiny_data_dir, per_class: int = 10) -> list[Path]:
    return [p for c in TINY_CLASSES for p in sorted((tiny_data_dir / "test" / c).glob("*.png"))[:per_class]]


def _predict_json(model: Path, files: list[Path], *extra) -> list[dict]:
    r = CliRunner().invoke(predict_cmd, [str(model), *map(str, files), "--json", "-", "--top-k", "3", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["predictions"]


# -- quiet logs ------------------------------------------------------------------------------------
def test_export_and_help_are_quiet_by_default(exported):
    _, r = exported
    noise = [line for line in r.stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noise, noise
    assert "[export] model_int8.tflite: convert + validate done" in r.stderr  # edgeclf's own log stays
    h = subprocess.run([sys.executable, "-m", "edgeclf.cli", "train", "--help"], cwd=ROOT, env=_quiet_env(),
                       capture_output=True, text=True, timeout=120, check=False)
    assert h.returncode == 0 and "Usage:" in h.stdout and not h.stderr.strip(), h.stderr


def test_tensorflow_start_up_lines_hidden_unless_asked():
    code = "import edgeclf._keras"
    quiet = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_quiet_env(), capture_output=True,
                           text=True, timeout=120, check=False)
    assert quiet.returncode == 0 and not quiet.stderr.strip(), quiet.stderr
    loud = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**_quiet_env(), "TF_CPP_MIN_LOG_LEVEL": "0"},
                          capture_output=True, text=True, timeout=120, check=False)
    assert loud.returncode == 0 and "I0000" in loud.stderr, loud.stderr  # what -v shows


# -- what an exported .tflite carries --------------------------------------------------------------------
def test_exported_tflite_carries_standard_metadata_and_labels(exported):
    from ai_edge_litert.interpreter import Interpreter

    d, _ = exported
    data = (d / "model_int8.tflite").read_bytes()
    assert {"edgeclf", "TFLITE_METADATA"} <= set(list_metadata(data))
    meta = read_standard_metadata(data)
    assert meta.labels == list(TINY_CLASSES) and meta.labels_file == "labels.txt"
    assert meta.image_size == (32, 32) and meta.color_space == "RGB"
    assert meta.mean == (0.0,) and meta.std == (1.0,)  # edgeclf models take pixels 0-255
    assert meta.author == "edgeclf" and meta.version and meta.name == "tiny"
    assert associated_files(data)["labels.txt"].decode().splitlines() == list(TINY_CLASSES)
    inp = Interpreter(model_content=data).get_input_details()[0]
    assert inp["dtype"] == np.uint8 and tuple(inp["quantization"]) == (1.0, 0)  # --int8-io default: raw pixels
    entry = {a["file"]: a for a in json.loads((d / "manifest.json").read_text())["artifacts"]}["model_int8.tflite"]
    assert entry["input_quantization"]["dtype"] == "uint8" and entry["status"] == "ok"


def test_mediapipe_image_classifier_matches_edgeclf_predict(exported, tiny_data_dir):
    """MediaPipe Tasks' ImageClassifier runs the exported files with no options: same labels, same top-1."""
    mp = pytest.importorskip("mediapipe", reason="mediapipe is not installed (.ci/run installs it)")
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    d, _ = exported
    files = _test_files(tiny_data_dir)
    for name in ("model_int8.tflite", "model_fp32.tflite"):
        ours = _predict_json(d / name, files)
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(d / name)))
        with vision.ImageClassifier.create_from_options(options) as clf:
            theirs = [clf.classify(mp.Image.create_from_file(str(f))).classifications[0].categories for f in files]
        assert {c.category_name for cats in theirs for c in cats} <= set(TINY_CLASSES)
        for cats, p in zip(theirs, ours):
            # the same top-1, except where edgeclf's top two are tied to within the int8 output's step
            # (1/256): MediaPipe's order of tied scores is its own
            tied = {k["label"] for k in p["top_k"] if p["top_k"][0]["prob"] - k["prob"] <= 1 / 256 + 1e-6}
            assert cats[0].category_name in tied, (name, cats[0].category_name, p["top_k"])
        diff = max(abs(cats[0].score - p["top_k"][0]["prob"]) for cats, p in zip(theirs, ours))
        assert diff < 0.01, (name, diff)


@pytest.mark.parametrize("io", ["int8", "float32"])
def test_int8_io_choices_export_and_validate(tiny_model_dir, tmp_path, io):
    from ai_edge_litert.interpreter import Interpreter

    from edgeclf.export import export_model
    from edgeclf.export.config import ExportConfig, Format, Int8Io, Precision

    d = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, d)
    # no accuracy gate (it has its own tests): with it, one net int8 flip of a valid tiny model on 30 images
    # would fail it and --auto-qat would replace the file; the agreement below is on all 90 test images, with
    # the bound test_export.py asserts for int8 files on the same 90
    cfg = ExportConfig(formats=(Format.TFLITE,), precisions=(Precision.INT8,), int8_io=Int8Io(io),
                       calibration_samples=32, max_accuracy_drop_pp=100.0, qat_if_gate_fails=False)
    (entry,) = export_model(d, cfg, progress=False).artifacts
    it = Interpreter(str(d / entry.file))
    assert np.dtype(it.get_input_details()[0]["dtype"]) == np.dtype(io)
    assert np.dtype(it.get_output_details()[0]["dtype"]) == np.dtype(io)
    assert entry.validation.n_images == 90 and entry.validation.top1_agreement >= 0.9
    assert read_standard_metadata((d / entry.file).read_bytes()).labels
    assert (entry.input_quantization is None) == (io == "float32")


def test_ai_edge_quantizer_needs_int8_io():
    from edgeclf.errors import ConfigError
    from edgeclf.export.config import ExportConfig, Int8Io, TfliteInt8Quantizer

    with pytest.raises(ConfigError, match="add --int8-io int8"):
        ExportConfig(tflite_int8=TfliteInt8Quantizer.AI_EDGE_QUANTIZER)
    ExportConfig(tflite_int8=TfliteInt8Quantizer.AI_EDGE_QUANTIZER, int8_io=Int8Io.INT8)


# -- a third-party classifier with standard metadata only ------------------------------------------------
COLOURS = ("red", "green", "blue")


def _colour_image(rng, colour: int, size: tuple[int, int], boost: int = 130) -> np.ndarray:
    """uint8 (H, W, 3) noise dominated by channel ``colour``."""
    img = rng.integers(0, 70, (*size, 3)).astype(np.uint8)
    img[..., colour] += np.uint8(boost)
    return img


def _third_party(tmp_path: Path, uint8: bool) -> tuple[Path, object]:
    """A MobileNet-style classifier: fixed (1, 224, 224, 3) input normalised to [-1, 1] (mean = std = 127.5),
    mean colour -> softmax over red/green/blue; uint8 I/O (full-integer) or float; standard metadata only."""
    from edgeclf._keras import keras, tf
    from edgeclf.export.metadata import ClassifierInfo, write_standard_metadata

    inp = keras.Input((224, 224, 3), batch_size=1)
    x = keras.layers.GlobalAveragePooling2D()(inp)
    dense = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inp, dense(x))
    dense.set_weights([np.eye(3, dtype=np.float32) * 6.0, np.zeros(3, np.float32)])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if uint8:  # calibrated on normalised one-colour images like the ones it will see
        calib = [(_colour_image(np.random.default_rng(i), i % 3, (224, 224)) - 127.5) / 127.5 for i in range(12)]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in calib)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.uint8
    info = ClassifierInfo(name="colours", labels=COLOURS, height=224, width=224, mean=(127.5,), std=(127.5,),
                          author="someone else", version="v1")
    path = tmp_path / ("colours_uint8.tflite" if uint8 else "colours_fp32.tflite")
    raw = conv.convert()
    path.with_suffix(".bare.tflite").write_bytes(raw)  # the same model without any metadata
    path.write_bytes(write_standard_metadata(raw, info))
    return path, model


@pytest.mark.parametrize("uint8", [True, False], ids=["uint8", "float"])
def test_third_party_model_with_standard_metadata_runs_without_options(tmp_path, uint8):
    model_path, keras_model = _third_party(tmp_path, uint8)
    assert "edgeclf" not in list_metadata(model_path.read_bytes())
    rng = np.random.default_rng(1)
    files, want = [], []
    for i in range(9):  # 300x200 photos dominated by one colour: resized to 224x224 by the runtime
        img = _colour_image(rng, i % 3, (200, 300), boost=110 + 15 * (i // 3))
        files.append(tmp_path / f"img{i}.png")
        cv2.imwrite(str(files[-1]), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        want.append(COLOURS[i % 3])
    preds = _predict_json(model_path, files)  # no --labels, no --input-size, no --mean/--std
    assert [p["top_k"][0]["label"] for p in preds] == want
    clf = load_classifier(model_path)
    assert clf.labels == list(COLOURS) and (clf.input_spec.height, clf.input_spec.width) == (224, 224)
    assert clf.input_spec.mean == (127.5,) and clf.input_spec.std == (127.5,)  # declared by the metadata
    from edgeclf.preprocess import load_image, to_model_batch

    x = to_model_batch([load_image(f) for f in files], 224, 224)
    ref = keras_model.predict((x - 127.5) / 127.5, batch_size=1, verbose=0)
    np.testing.assert_allclose(clf.predict(x), ref, atol=0.02 if uint8 else 1e-5)


def test_corrupt_standard_metadata_is_ignored_with_a_warning(tmp_path, caplog):
    from edgeclf.errors import ModelLoadError
    from edgeclf.runtime.tflite_metadata import add_metadata

    model_path, _ = _third_party(tmp_path, uint8=False)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(add_metadata(model_path.read_bytes(), "TFLITE_METADATA", b"not a flatbuffer"))
    with pytest.raises(ModelLoadError, match="declares no labels"):
        load_classifier(bad)
    assert "ignoring its standard TFLite metadata" in caplog.text
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(COLOURS) + "\n")
    assert load_classifier(bad, labels_file=labels, mean=(127.5,), std=(127.5,)).labels == list(COLOURS)


def test_uint8_model_without_metadata_gets_pixels_as_they_are(tmp_path):
    """No metadata: labels must be given, and a uint8 input takes the normalisation its quantization
    implies (pixel - zero_point) * scale, i.e. the raw pixels, as MediaPipe would feed them."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeclf.errors import ModelLoadError

    model_path, _ = _third_party(tmp_path, uint8=True)
    bare = model_path.with_suffix(".bare.tflite")
    with pytest.raises(ModelLoadError, match="declares no labels"):
        load_classifier(bare)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(COLOURS) + "\n")
    clf = load_classifier(bare, labels_file=labels)
    zp, scale = Interpreter(str(bare)).get_input_details()[0]["quantization"][::-1]
    assert clf.input_spec.mean == (float(zp),) and clf.input_spec.std == pytest.approx((1 / scale,))
    px = np.arange(224 * 224 * 3, dtype=np.int64).reshape(1, 224, 224, 3) % 256
    np.testing.assert_array_equal(clf.prepare_batch(px.astype(np.float32)), px.astype(np.uint8))

"""Model fixtures for the runtime tests, built once per test session (cached in this module).

A tiny tf_keras CNN (float [0, 255] 32x32x3 -> Rescaling -> Conv2D 8 -> GAP -> Dense 3 softmax)
trained for a few steps on synthetic red/green/blue images, exported as fp32 and full-int8
(int8 in/out) TFLite and as ONNX, with and without embedded metadata, plus a manifest.json.
TensorFlow is imported only here (in the test process), never by edgeclf.runtime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELS = ["red", "green", "blue"]
SIZE = 32


@dataclass
class RuntimeModels:
    root: Path
    model_dir: Path          # manifest.json + labels.txt + all artifacts (with metadata)
    bare_dir: Path           # the same models without any edgeclf metadata, no manifest
    images: np.ndarray       # uint8 (N, 32, 32, 3) RGB test images
    labels_true: np.ndarray  # int64 (N,)
    keras_probs: np.ndarray  # float32 (N, 3) of the Keras model on ``images``


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 32, 32, 3) noisy images dominated by red, green or blue, and their int labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = rng.integers(0, 90, size=(n, SIZE, SIZE, 3)).astype(np.int32)
    for i, c in enumerate(y):
        x[i, :, :, c] += rng.integers(120, 165)
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


_CACHE: dict[str, RuntimeModels] = {}


def build_models(tmp_path_factory) -> RuntimeModels:
    """Build (once per process, whichever test module asks first) and return the model fixtures."""
    if "models" in _CACHE:
        return _CACHE["models"]
    import os

    root = tmp_path_factory.mktemp("runtime_models")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import tf_keras as keras

    from edgeclf.runtime.manifest import ArtifactEntry, Format, InputSpec, Manifest, Precision, write_manifest
    from edgeclf.runtime.tflite_metadata import add_metadata

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3), dtype="float32")
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    h = keras.layers.Conv2D(8, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    x_train, y_train = synthetic_images(256, seed=1)
    model.fit(x_train.astype(np.float32), y_train, batch_size=32, epochs=3, verbose=0)

    images, labels_true = synthetic_images(48, seed=2)
    keras_probs = model.predict(images.astype(np.float32), verbose=0).astype(np.float32)

    model_dir, bare_dir = root / "model", root / "bare"
    model_dir.mkdir(parents=True)
    bare_dir.mkdir(parents=True)

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    fp32 = conv.convert()

    def representative():
        for i in range(0, 64, 8):
            yield [x_train[i:i + 8].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    int8 = conv.convert()

    import tf2onnx

    spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="input"),)
    onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)

    ispec = InputSpec(height=SIZE, width=SIZE, channels=3)
    manifest = Manifest(name="tiny", input=ispec, labels=list(LABELS), model="cnn", dataset="synthetic")
    for name, data, precision in (("model_fp32.tflite", fp32, Precision.FP32),
                                  ("model_int8.tflite", int8, Precision.INT8)):
        meta = json.dumps(manifest.embedded_metadata(precision)).encode()
        (model_dir / name).write_bytes(add_metadata(data, "edgeclf", meta))
        (bare_dir / name).write_bytes(data)
        manifest.upsert_artifact(ArtifactEntry(file=name, format=Format.TFLITE, precision=precision))
    (bare_dir / "model_fp32.onnx").write_bytes(onnx_model.SerializeToString())
    entry = onnx_model.metadata_props.add()
    entry.key, entry.value = "edgeclf", json.dumps(manifest.embedded_metadata(Precision.FP32))
    (model_dir / "model_fp32.onnx").write_bytes(onnx_model.SerializeToString())
    manifest.upsert_artifact(ArtifactEntry(file="model_fp32.onnx", format=Format.ONNX, precision=Precision.FP32))
    write_manifest(model_dir, manifest)
    (model_dir / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (bare_dir / "labels.txt").write_text("\n".join(LABELS) + "\n")

    models = RuntimeModels(root, model_dir, bare_dir, images, labels_true, keras_probs)
    _CACHE["models"] = models
    return models


def write_labelled_folder(root: Path, images: np.ndarray, labels_true: np.ndarray) -> Path:
    """Write ``images`` as PNGs into ``root/<label>/img_<i>.png``; returns ``root``."""
    import cv2

    for i, (img, y) in enumerate(zip(images, labels_true)):
        d = root / LABELS[int(y)]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"img_{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return root


def write_video(path: Path, n_frames: int = 60, size: tuple[int, int] = (640, 480), fps: float = 30.0) -> Path:
    """Write an mp4v video of ``n_frames`` solid-ish coloured 640x480 frames cycling red/green/blue."""
    import cv2

    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), "cv2.VideoWriter cannot write mp4v"
    rng = np.random.default_rng(3)
    for i in range(n_frames):
        frame = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        frame[:, :, 2 - (i % 3)] += 150  # BGR order: red first
        writer.write(frame)
    writer.release()
    return path

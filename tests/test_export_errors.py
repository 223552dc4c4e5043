"""A model the converter cannot handle: one artifact fails, the others are made and listed.

Real failure, no mocks: a ``Resizing(interpolation="bicubic")`` layer is a TensorFlow
``ResizeBicubic`` op, which is no TFLite builtin (the converter refuses it without TF Select),
while tf2onnx maps it to an ONNX ``Resize`` (cubic).
"""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from edgeclf._io import sha256_file
from edgeclf.cli import cli


def _bicubic_model_dir(tiny_model_dir, d):
    """A copy of the tiny model directory whose model.keras starts with a bicubic resize (untrained)."""
    from edgeclf._keras import keras

    shutil.copytree(tiny_model_dir, d)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Resizing(16, 16, interpolation="bicubic")(inputs)
    x = keras.layers.Rescaling(1 / 255.0)(x)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    keras.Model(inputs, outputs).save(d / "model.keras")
    return d


def test_converter_failure_is_one_error_line_and_the_other_artifacts_are_kept(tiny_model_dir, tmp_path):
    d = _bicubic_model_dir(tiny_model_dir, tmp_path / "tiny")
    r = CliRunner().invoke(cli, ["export", str(d), "--formats", "tflite,onnx", "--quantize", "none",
                                 "--val-samples", "30", "--max-accuracy-drop", "100"])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    lines = r.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert errors == [lines[-1]]
    assert lines[-1] == (f"Error: {d / 'model_fp32.tflite'}: tflite fp32 conversion failed (ConverterError: "
                         "'tf.ResizeBicubic' op is neither a custom op nor a flex op)")
    rows = {line.split()[0]: line for line in lines if line.startswith("model_")}
    assert rows["model_fp32.onnx"].endswith(" ok") and rows["model_fp32.tflite"].endswith(" export failed")
    # nothing half-written: no file for the failed artifact, no temporary names left
    assert not (d / "model_fp32.tflite").exists()
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []
    # the artifact made after the failure is written, validated and listed with its real hash
    manifest = json.loads((d / "manifest.json").read_text())
    assert [a["file"] for a in manifest["artifacts"]] == ["model_fp32.onnx"]
    entry = manifest["artifacts"][0]
    assert entry["status"] == "ok" and entry["sha256"] == sha256_file(d / "model_fp32.onnx")
    assert entry["validation"]["top1_agreement"] > 0.9


def test_export_model_raises_export_error_with_the_partial_result(tiny_model_dir, tmp_path):
    import pytest

    from edgeclf.errors import ExportError
    from edgeclf.export import ExportConfig, Format, Precision, export_model

    d = _bicubic_model_dir(tiny_model_dir, tmp_path / "tiny")
    cfg = ExportConfig(formats=(Format.TFLITE,), precisions=(Precision.INT8, Precision.FP32), calibration_samples=30,
                       val_samples=30, max_accuracy_drop_pp=100.0)
    with pytest.raises(ExportError) as info:
        export_model(d, cfg, progress=False)
    result = info.value.result
    assert sorted(result.export_errors) == ["model_fp32.tflite", "model_int8.tflite"]
    assert all("'tf.ResizeBicubic' op is neither a custom op nor a flex op" in m
               for m in result.export_errors.values())
    assert result.artifacts == [] and json.loads((d / "manifest.json").read_text())["artifacts"] == []

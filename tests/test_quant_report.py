"""--quant-report and --fallback on the tiny session model: real TFLite QuantizationDebugger /
onnxruntime qdq_loss_debug reports, and the fallback loop moving layers to float under a budget no
file can meet (so it must stop at the layer limit), plus the loop's stopping rule on its own."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from edgeclf.runtime.manifest import Validation

LIMIT = 2


@pytest.fixture(scope="module")
def reported(tiny_model_dir, tmp_path_factory):
    """int8 TFLite + ONNX (u8s8) with --quant-report and --fallback under an impossible budget."""
    from edgeclf.export import ExportConfig, OnnxInt8Recipe, Precision, export_model

    d = tmp_path_factory.mktemp("quant") / "tiny"
    shutil.copytree(tiny_model_dir, d)
    cfg = ExportConfig(precisions=(Precision.INT8,), calibration_samples=30, val_samples=30,
                       onnx_int8=OnnxInt8Recipe.U8S8, quant_report=True, fallback=True, fallback_max_layers=LIMIT,
                       max_accuracy_drop_pp=-100.0, allow_drop=True)
    return d, export_model(d, cfg, progress=False)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name, scope", [("model_int8.tflite", "layer"), ("model_int8.onnx", "cumulative")])
def test_report_shape(reported, name, scope):
    from edgeclf.export.quant_report import REPORT_COLUMNS, report_paths

    d, result = reported
    csv_path, png_path = report_paths(d, name)
    rows = _rows(csv_path)
    assert tuple(rows[0].keys()) == REPORT_COLUMNS
    layers = [r["layer"] for r in rows]
    assert len(layers) == len(set(layers)) >= 5, "one row per quantized layer"
    assert {r["file"] for r in rows} == {name} and {r["scope"] for r in rows} == {scope}
    snr = np.array([float(r["snr_db"]) for r in rows])
    assert np.all(np.isfinite(snr)) and np.median(snr) > 10, "8-bit layers are well above 10 dB SNR"
    assert all(float(r["mse"]) >= 0 for r in rows)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    entry = next(a for a in result.artifacts if a.file == name)
    assert [e.snr_db for e in entry.worst_layers] == sorted(snr)[:5]


def test_report_rows_are_the_quantized_layers(reported):
    """TFLite rows name the output tensors of quantized ops; ONNX rows name nodes of the float graph that
    carry Q/DQ in the int8 graph (those nodes_to_exclude takes)."""
    import onnx

    from edgeclf.export.quant_report import report_paths

    d, _ = reported
    onnx_rows = _rows(report_paths(d, "model_int8.onnx")[0])
    graph = onnx.load(str(d / "model_int8.onnx")).graph
    names = {n.name: n for n in graph.node}
    assert all(r["layer"] in names for r in onnx_rows)
    assert {"Conv", "MatMul"} & {r["op_type"] for r in onnx_rows} or any(r["op_type"] == "Gemm" for r in onnx_rows)
    ops = {r["op_type"] for r in _rows(report_paths(d, "model_int8.tflite")[0])}
    assert "CONV_2D" in ops and not ops & {"QUANTIZE", "DEQUANTIZE"}


def test_fallback_moves_layers_to_float_until_the_limit(reported):
    from ai_edge_litert.interpreter import Interpreter

    from edgeclf.runtime import read_manifest

    d, result = reported
    m = read_manifest(d)
    for entry in m.artifacts:
        assert len(entry.float_layers) == LIMIT, entry.file   # an impossible budget: stops at the limit
        fb = entry.fallback
        assert fb is not None and not fb.within_budget and entry.status.value == "validation failed"
        assert fb.size_bytes_int8 > 0 and fb.latency_ms_p50 > 0 and fb.latency_ms_p50_int8 > 0
        assert entry.float_layers == [e.layer for e in entry.worst_layers[:LIMIT]], "most sensitive first"
        assert entry.int8_weights.int8_kernel_params > 0 and entry.validated_on is not None
    tfl = next(a for a in m.artifacts if a.file.endswith(".tflite"))
    dtypes = {t["name"]: np.dtype(t["dtype"]) for t in Interpreter(str(d / tfl.file)).get_tensor_details()}
    assert all(dtypes[name] == np.float32 for name in tfl.float_layers), "kept layers compute in float"
    assert np.dtype(np.int8) in dtypes.values()

    import onnx

    onx = next(a for a in m.artifacts if a.file.endswith(".onnx"))
    graph = onnx.load(str(d / onx.file)).graph
    consumers = {i: n.op_type for n in graph.node for i in n.input}
    for node in (n for n in graph.node if n.name in onx.float_layers):
        assert all(consumers.get(out) != "QuantizeLinear" for out in node.output), node.name


def test_fallback_search_stops_within_budget():
    from edgeclf.export.fallback import search

    drops = {1: 2.0, 2: 1.2, 3: 0.4, 4: 0.1}
    calls = []

    def attempt(layers):
        calls.append(layers)
        return Validation(top1_acc=0.9, acc_drop_pp=drops[len(layers)], top1_agreement=0.9, max_abs_prob_diff=0.1,
                          n_images=10)

    out = search(["a", "b", "c", "d", "e"], attempt, max_drop_pp=0.5, max_layers=8)
    assert out.float_layers == ("a", "b", "c") and out.within_budget and len(calls) == 3
    calls.clear()
    out = search(["a", "b", "c", "d", "e"], attempt, max_drop_pp=0.05, max_layers=4)
    assert out.float_layers == ("a", "b", "c", "d") and not out.within_budget and len(calls) == 4
    assert search([], attempt, 0.5, 8) is None


def test_cli_refuses_contradictory_quant_options(tiny_model_dir):
    from click.testing import CliRunner

    from edgeclf.cli import cli

    for args, message in ((["--quantize", "none", "--fallback"], "--fallback"),
                          (["--qat", "--quant-report"], "--quant-report"),
                          (["--fallback", "--fallback-max-layers", "0"], "--fallback-max-layers")):
        r = CliRunner().invoke(cli, ["export", str(tiny_model_dir), *args])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output


def test_qdq_calibration_uses_every_batch(tiny_model_dir, tmp_path):
    """17 calibration batches calibrate, on all of them: the activation ranges are the same whether
    the widest images are in the first or the last batch (onnxruntime's CalibMaxIntermediateOutputs
    dropped the earlier batches; with exactly 16 batches it failed with "No data is collected")."""
    import onnx
    from onnx import numpy_helper

    from edgeclf.export.config import OnnxInt8Recipe
    from edgeclf.export.onnx import float_onnx_for_quantization, quantize_qdq
    from edgeclf.models.io import load_keras_model

    model = load_keras_model(tiny_model_dir)
    fp32 = float_onnx_for_quantization(model, tmp_path / "fp32.onnx")
    images = np.full((17 * 32, *model.input_shape[1:]), 100.0, np.float32)  # 17 batches of 32
    images[:2] = np.random.default_rng(0).uniform(0, 255, images[:2].shape)  # wide range: first batch only

    def scales(x, name):
        q = onnx.load(str(quantize_qdq(fp32, tmp_path / name, x, OnnxInt8Recipe.U8S8)))
        inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
        return [float(inits[n.input[1]]) for n in q.graph.node if n.op_type == "QuantizeLinear"
                and inits[n.input[1]].size == 1]

    first, last = scales(images, "first.onnx"), scales(images[::-1].copy(), "last.onnx")
    assert len(first) > 0
    np.testing.assert_allclose(first, last, rtol=1e-5)

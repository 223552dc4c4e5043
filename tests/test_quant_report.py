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
    """int8 TFLite + ONNX (u8s8) with --quant-report and --fallback --fallback-ranking measured under an
    impossible budget.

    Every file the export validates is recorded (suffix, sha256, validation) and copied to
    ``validated/`` (``validate.validate_file`` wrapped): the all-int8 file, then each fallback attempt.
    """
    from edgeclf._io import sha256_file
    from edgeclf.export import ExportConfig, OnnxInt8Recipe, Precision, export_model, validate

    d = tmp_path_factory.mktemp("quant") / "tiny"
    shutil.copytree(tiny_model_dir, d)
    copies = tmp_path_factory.mktemp("validated")
    validated = []
    real = validate.validate_file

    def spy(path, *args, **kwargs):
        v = real(path, *args, **kwargs)
        copy = copies / f"{len(validated)}{path.suffix}"
        shutil.copyfile(path, copy)
        validated.append((path.suffix, sha256_file(path), v, copy))
        return v

    cfg = ExportConfig(precisions=(Precision.INT8,), calibration_samples=30, val_samples=30,
                       onnx_int8=OnnxInt8Recipe.U8S8, quant_report=True, fallback=True, fallback_max_layers=LIMIT,
                       fallback_ranking="measured", max_accuracy_drop_pp=-100.0, allow_drop=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(validate, "validate_file", spy)
        result = export_model(d, cfg, progress=False)
    return d, result, validated


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name, scope", [("model_int8.tflite", "layer"), ("model_int8.onnx", "cumulative")])
def test_report_shape(reported, name, scope):
    from edgeclf.export.quant_report import REPORT_COLUMNS, report_paths

    d, result, _ = reported
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


def test_report_rows_are_the_quantized_layers(reported, tmp_path):
    """TFLite rows name the output tensors of quantized ops; ONNX rows name nodes of the float graph
    given to quantize_static (those nodes_to_exclude takes; the all-int8 file with int8 I/O renames
    its input Transpose / output Squeeze, so the check is on the float graph)."""
    import onnx

    from edgeclf.export.onnx import float_onnx_for_quantization
    from edgeclf.export.quant_report import report_paths
    from edgeclf.models.io import load_keras_model

    d, _, _ = reported
    onnx_rows = _rows(report_paths(d, "model_int8.onnx")[0])
    graph = onnx.load(str(float_onnx_for_quantization(load_keras_model(d), tmp_path / "fp32.onnx"))).graph
    names = {n.name: n for n in graph.node}
    assert all(r["layer"] in names for r in onnx_rows), [r["layer"] for r in onnx_rows if r["layer"] not in names]
    assert {"Conv", "MatMul"} & {r["op_type"] for r in onnx_rows} or any(r["op_type"] == "Gemm" for r in onnx_rows)
    ops = {r["op_type"] for r in _rows(report_paths(d, "model_int8.tflite")[0])}
    assert "CONV_2D" in ops and not ops & {"QUANTIZE", "DEQUANTIZE"}


def test_fallback_moves_layers_to_float_until_the_limit(reported):
    """Under an impossible budget the measured ranking probes the LIMIT lowest-SNR layers alone, then adds
    them smallest drop first up to the limit, and the layers kept in float compute in float (checked on
    the last attempt's file, whichever file is kept)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeclf.runtime import read_manifest

    d, _, validated = reported
    m = read_manifest(d)
    for entry in m.artifacts:
        fb = entry.fallback
        assert fb is not None and not fb.within_budget and entry.status.value == "validation failed"
        assert fb.size_bytes_int8 > 0 and fb.latency_ms_p50 > 0 and fb.latency_ms_p50_int8 > 0
        worst = [e.layer for e in entry.worst_layers]
        probes = [a for a in fb.attempts if a.probe]
        assert fb.ranking == "measured" and [a.float_layers for a in probes] == [[w] for w in worst[:LIMIT]]
        steps = [a.float_layers for a in fb.attempts if not a.probe]
        order = [a.float_layers[0] for a in sorted(probes, key=lambda a: a.acc_drop_pp)]
        assert steps == [order[:k] for k in range(2, LIMIT + 1)], "an impossible budget: stops at the limit"
        assert entry.int8_weights.int8_kernel_params > 0 and entry.validated_on is not None
    tfl = next(a for a in m.artifacts if a.file.endswith(".tflite"))
    last_tfl = [copy for suffix, _, _, copy in validated if suffix == ".tflite"][-1]
    dtypes = {t["name"]: np.dtype(t["dtype"]) for t in Interpreter(str(last_tfl)).get_tensor_details()}
    assert all(dtypes[name] == np.float32 for name in tfl.fallback.attempts[-1].float_layers), \
        "kept layers compute in float"
    assert np.dtype(np.int8) in dtypes.values()

    import onnx

    onx = next(a for a in m.artifacts if a.file.endswith(".onnx"))
    last_onnx = [copy for suffix, _, _, copy in validated if suffix == ".onnx"][-1]
    graph = onnx.load(str(last_onnx)).graph
    consumers = {i: n.op_type for n in graph.node for i in n.input}
    float_nodes = [n for n in graph.node if n.name in onx.fallback.attempts[-1].float_layers]
    assert len(float_nodes) == LIMIT
    for node in float_nodes:
        assert all(consumers.get(out) != "QuantizeLinear" for out in node.output), node.name


def test_fallback_keeps_the_best_file_when_none_passes(reported):
    """The file written is, byte for byte, the validated file with the smallest drop among the all-int8
    file and the LIMIT attempts (ties: the earlier), and its manifest entry says so."""
    from edgeclf._io import sha256_file
    from edgeclf.runtime import read_manifest

    d, _, validated = reported
    for entry in read_manifest(d).artifacts:
        runs = [(sha, v) for suffix, sha, v, _ in validated if suffix == (d / entry.file).suffix]
        fb = entry.fallback
        assert len(runs) == 1 + len(fb.attempts) == 2 * LIMIT, "the all-int8 file, then one per attempt"
        drops = [v.acc_drop_pp for _, v in runs]
        i = drops.index(min(drops))
        assert fb.kept == "best" and fb.acc_drop_pp_int8 == drops[0]
        assert [a.acc_drop_pp for a in fb.attempts] == drops[1:]
        assert entry.validation == runs[i][1] and entry.sha256 == runs[i][0] == sha256_file(d / entry.file)
        assert entry.float_layers == ([] if i == 0 else fb.attempts[i - 1].float_layers)
        if i == 0:
            assert fb.latency_ms_p50 == fb.latency_ms_p50_int8 and entry.size_bytes == fb.size_bytes_int8


def _v(drop):
    return Validation(top1_acc=0.9, acc_drop_pp=drop, top1_agreement=0.9, max_abs_prob_diff=0.1, n_images=10)


class FakeFile:
    """``attempt`` from a dict {float layers: drop}, and ``keep`` as the pipeline uses it: the file
    "written" is the last attempt's layers, ``keep`` copies it aside, ``kept_file`` is that copy."""

    def __init__(self, drops):
        self.drops, self.calls, self.written, self.kept_file = drops, [], (), None

    def attempt(self, layers):
        self.calls.append(layers)
        self.written = layers
        return _v(self.drops[layers])

    def keep(self, layers):
        assert layers == self.written, "keep() must name the file written at that moment"
        self.kept_file = self.written


def _search(drops, ranked, int8_drop, budget, max_layers, ranking="snr"):
    from edgeclf.export.fallback import search

    fake = FakeFile(drops)
    out = search(ranked, fake.attempt, budget, max_layers, int8=_v(int8_drop), ranking=ranking, keep=fake.keep)
    assert fake.kept_file == out.float_layers, "the copy written back is the kept file"
    assert [tuple(a.float_layers) for a in out.attempts] == fake.calls
    return out, fake


def test_fallback_search_stops_at_the_first_attempt_within_budget():
    from edgeclf.export.fallback import search

    drops = {("a",): 2.0, ("a", "b"): 1.2, ("a", "b", "c"): 0.4, ("a", "b", "c", "d"): 0.1}
    out, fake = _search(drops, ["a", "b", "c", "d", "e"], 3.0, budget=0.5, max_layers=8)
    assert out.float_layers == ("a", "b", "c") and out.within_budget and out.kept == "within-budget"
    assert out.validation.acc_drop_pp == 0.4 and len(fake.calls) == 3
    out, fake = _search(drops, ["a", "b", "c", "d", "e"], 3.0, budget=0.05, max_layers=4)
    assert out.float_layers == ("a", "b", "c", "d") and not out.within_budget and len(fake.calls) == 4
    assert search([], FakeFile({}).attempt, 0.5, 8, int8=_v(1.0)) is None


def test_fallback_search_keeps_the_best_attempt_when_none_passes():
    """The mobilenet_v2 TFLite case: better with 1 float layer, worse from the 2nd on."""
    drops = {("a",): 0.50, ("a", "b"): 2.3, ("a", "b", "c"): 2.7}
    out, fake = _search(drops, ["a", "b", "c", "d"], 0.69, budget=0.3, max_layers=3)
    assert fake.calls == [("a",), ("a", "b"), ("a", "b", "c")], "every attempt up to the limit is made"
    assert out.float_layers == ("a",) and out.validation.acc_drop_pp == 0.50
    assert not out.within_budget and out.kept == "best"
    assert fake.written == ("a", "b", "c") != fake.kept_file, "the last attempt is not the kept file"


def test_fallback_search_keeps_all_int8_when_it_was_best():
    drops = {("a",): 0.8, ("a", "b"): 0.7}
    out, fake = _search(drops, ["a", "b"], 0.69, budget=0.3, max_layers=8)
    assert len(fake.calls) == 2 and out.float_layers == () and out.validation.acc_drop_pp == 0.69
    assert not out.within_budget and out.kept == "best" and fake.kept_file == ()
    # a tie keeps the earlier file, i.e. fewer float layers
    out, _ = _search({("a",): 0.69, ("a", "b"): 0.9}, ["a", "b"], 0.69, budget=0.3, max_layers=8)
    assert out.float_layers == ()


def test_fallback_search_measured_ranking():
    """One probe per top-max_layers candidate alone in float (d, 4th, is not a candidate), then the
    cumulative search in the order of the probes' drops; (b,) is not made twice."""
    drops = {("a",): 0.9, ("b",): 0.2, ("c",): 0.5, ("d",): 0.0, ("b", "c"): 0.05, ("b", "c", "a"): 0.01}
    out, fake = _search(drops, ["a", "b", "c", "d"], 1.0, budget=0.1, max_layers=3, ranking="measured")
    assert fake.calls == [("a",), ("b",), ("c",), ("b", "c")]
    assert [a.probe for a in out.attempts] == [True, True, True, False]
    assert out.float_layers == ("b", "c") and out.within_budget and out.ranking == "measured"
    # nothing passes: the best file may be a probe, re-made by no one: it is the one kept aside
    drops.update({("b", "c"): 0.3, ("b", "c", "a"): 0.4})
    out, fake = _search(drops, ["a", "b", "c", "d"], 1.0, budget=0.01, max_layers=3, ranking="measured")
    assert fake.calls == [("a",), ("b",), ("c",), ("b", "c"), ("b", "c", "a")]
    assert out.float_layers == ("b",) and out.validation.acc_drop_pp == 0.2 and not out.within_budget
    # a single probe within the budget: the cumulative k = 1 is the best probe, no new file
    out, fake = _search({("a",): 0.3, ("b",): 0.05, ("c",): 0.08}, ["a", "b", "c"], 1.0, budget=0.1,
                        max_layers=3, ranking="measured")
    assert fake.calls == [("a",), ("b",), ("c",)] and out.float_layers == ("b",) and out.within_budget


def test_fallback_search_refuses_an_unknown_ranking():
    from edgeclf.export.fallback import search

    with pytest.raises(ValueError, match="ranking"):
        search(["a"], FakeFile({}).attempt, 0.5, 1, int8=_v(1.0), ranking="random")


def test_table_says_which_fallback_file_was_kept():
    from edgeclf.cli.export import int8_notes
    from edgeclf.runtime.manifest import ArtifactEntry, FallbackAttempt, FallbackCost, Format, Precision

    attempts = [FallbackAttempt(["a"], 0.5), FallbackAttempt(["a", "b"], 2.3)]

    def note(float_layers, drop, **kw):
        fb = FallbackCost(acc_drop_pp_int8=0.69, size_bytes_int8=100, latency_ms_p50_int8=1.0, latency_ms_p50=1.2,
                          within_budget=False, attempts=attempts, **kw)
        entry = ArtifactEntry("model_int8.tflite", Format.TFLITE, Precision.INT8, size_bytes=120,
                              float_layers=float_layers, validation=_v(drop), fallback=fb)
        return int8_notes([entry])[-1]

    assert "kept the best of 2 attempt(s)" in note(["a"], 0.5, kept="best")
    assert "0 float layer(s)" in note([], 0.69, kept="best") and "kept the all-int8 file" in note([], 0.69, kept="best")
    assert "measured ranking" in note(["a"], 0.5, kept="best", ranking="measured")
    assert "kept" not in note(["a", "b"], 2.3)   # an older manifest: the last attempt


def test_cli_refuses_contradictory_quant_options(tiny_model_dir):
    from click.testing import CliRunner

    from edgeclf.cli import cli

    for args, message in ((["--quantize", "none", "--fallback"], "--fallback"),
                          (["--qat", "--quant-report"], "--quant-report"),
                          (["--fallback", "--fallback-max-layers", "0"], "--fallback-max-layers"),
                          (["--fallback-ranking", "measured"], "--fallback-ranking"),
                          (["--fallback", "--fallback-ranking", "best"], "--fallback-ranking")):
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

"""edgeclf.export.onnx_qdq: int8 activations of a QDQ graph rewritten as uint8 (exactly), so that
onnxruntime fuses the layers around a tensor with two consumers (a residual block)."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeclf.export.onnx_qdq import activations_to_uint8

C = 8  # channels


def _qdq(prefix: str, x: str, scale: float, zp: int, nodes: list, inits: list) -> str:
    """x -> QuantizeLinear -> DequantizeLinear (int8, per tensor); returns the DQ output name."""
    inits += [numpy_helper.from_array(np.array(scale, np.float32), f"{prefix}_s"),
              numpy_helper.from_array(np.array(zp, np.int8), f"{prefix}_z")]
    nodes += [helper.make_node("QuantizeLinear", [x, f"{prefix}_s", f"{prefix}_z"], [f"{prefix}_q"]),
              helper.make_node("DequantizeLinear", [f"{prefix}_q", f"{prefix}_s", f"{prefix}_z"], [f"{prefix}_dq"])]
    return f"{prefix}_dq"


def _conv(prefix: str, x: str, x_scale: float, rng, nodes: list, inits: list) -> str:
    """A 1x1 Conv with per-channel int8 weights and an int32 bias (scale ``x_scale`` x weight scale) through
    DQ nodes, as tf2onnx writes them."""
    w = rng.integers(-127, 128, (C, C, 1, 1)).astype(np.int8)
    ws = rng.uniform(0.005, 0.02, C).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"{prefix}_w"), numpy_helper.from_array(ws, f"{prefix}_ws"),
              numpy_helper.from_array(np.zeros(C, np.int8), f"{prefix}_wz"),
              numpy_helper.from_array(rng.integers(-500, 500, C).astype(np.int32), f"{prefix}_b"),
              numpy_helper.from_array((ws * x_scale).astype(np.float32), f"{prefix}_bs"),
              numpy_helper.from_array(np.zeros(C, np.int32), f"{prefix}_bz")]
    nodes += [helper.make_node("DequantizeLinear", [f"{prefix}_w", f"{prefix}_ws", f"{prefix}_wz"], [f"{prefix}_wdq"],
                               axis=0),
              helper.make_node("DequantizeLinear", [f"{prefix}_b", f"{prefix}_bs", f"{prefix}_bz"], [f"{prefix}_bdq"],
                               axis=0),
              helper.make_node("Conv", [x, f"{prefix}_wdq", f"{prefix}_bdq"], [f"{prefix}_y"])]
    return f"{prefix}_y"


def _residual_block_model() -> onnx.ModelProto:
    """input -> Q/DQ -> conv0 -> Q/DQ (shared: conv1 and the Add) -> conv1 -> Q/DQ -> Add -> Q/DQ -> Add (a
    constant int8 DQ) -> Q/DQ -> output: the pattern of a tf2onnx-converted int8 MobileNetV2 residual block."""
    rng = np.random.default_rng(0)
    nodes: list = []
    inits: list = []
    x = _qdq("in", "x", 0.05, -3, nodes, inits)
    shared = _qdq("a", _conv("c0", x, 0.05, rng, nodes, inits), 0.04, -10, nodes, inits)
    branch = _qdq("b", _conv("c1", shared, 0.04, rng, nodes, inits), 0.04, 5, nodes, inits)
    inits += [numpy_helper.from_array(np.array(-128, np.int8), "k"),
              numpy_helper.from_array(np.array(0.01, np.float32), "k_s"),
              numpy_helper.from_array(np.array(100, np.int8), "k_z")]
    nodes += [helper.make_node("DequantizeLinear", ["k", "k_s", "k_z"], ["k_dq"]),
              helper.make_node("Add", [shared, branch], ["sum"])]
    total = _qdq("sum", "sum", 0.08, 2, nodes, inits)
    nodes.append(helper.make_node("Add", [total, "k_dq"], ["sum2"]))
    out = _qdq("out", "sum2", 0.08, 0, nodes, inits)
    nodes.append(helper.make_node("Identity", [out], ["y"]))
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, C, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, C, 6, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _run(model, x, level):
    so = ort.SessionOptions()
    so.graph_optimization_level, so.intra_op_num_threads = level, 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _optimized_ops(model, tmp_path) -> collections.Counter:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # the QDQ fusions, no layout
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)


def test_rewrite_is_exact_and_every_layer_fuses(tmp_path):
    model = _residual_block_model()
    x = np.random.default_rng(1).normal(0, 2, (4, C, 6, 6)).astype(np.float32)
    before = _run(model, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    old_ops = _optimized_ops(model, tmp_path)

    new = onnx.ModelProto()
    new.CopyFrom(model)
    assert activations_to_uint8(new) == 6  # 5 activation Q (with their DQs) + the Add's constant DQ
    onnx.checker.check_model(new)
    # the reference computation (no fusion) gives the same numbers: uint8 = int8 + 128, zero point too
    np.testing.assert_array_equal(_run(new, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL), before)
    # weights and biases stay int8 / int32; every activation zero point is uint8
    inits = {t.name: numpy_helper.to_array(t) for t in new.graph.initializer}
    assert inits["c0_w"].dtype == np.int8 and inits["c1_b"].dtype == np.int32
    for node in new.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and inits[node.input[1]].ndim == 0:
            assert inits[node.input[2]].dtype == np.uint8, node.output
    # onnxruntime: before, the shared int8 pair kept a Conv and the Adds in float; after, none is
    new_ops = _optimized_ops(new, tmp_path)
    assert old_ops["Conv"] >= 1 and old_ops["Add"] >= 1, old_ops
    assert new_ops["QLinearConv"] == 2 and new_ops["Conv"] == 0 and new_ops["Add"] == 0, new_ops
    # the fused integer kernels round each of the three layers once, in integers: the output stays within
    # two quantization steps (0.08) of the float reference (measured: 80 % of values equal, max 2 steps)
    fused = _run(new, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    assert np.abs(fused - before).max() <= 2 * 0.08 + 1e-6


def test_graph_outputs_and_mixed_zero_points_are_left_alone():
    model = _residual_block_model()
    # a Q whose output is a graph output keeps its type
    model.graph.output.append(helper.make_tensor_value_info("out_q", TensorProto.INT8, None))
    # a Q whose DQ consumers disagree on the zero point is not touched
    model.graph.initializer.append(numpy_helper.from_array(np.array(7, np.int8), "other_z"))
    dq_b = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "b_q")
    dq_b.input[2] = "other_z"
    activations_to_uint8(model)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    q = {n.output[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert inits[q["out_q"].input[2]].dtype == np.int8
    assert inits[q["b_q"].input[2]].dtype == np.int8
    assert inits[q["a_q"].input[2]].dtype == np.uint8


@pytest.mark.parametrize("zp", [-128, 127])
def test_saturation_bounds_move_with_the_zero_point(zp):
    """Values far outside the int8 range clamp to the same floats after the rewrite."""
    nodes: list = []
    inits: list = []
    out = _qdq("q", "x", 0.1, zp, nodes, inits)
    nodes.append(helper.make_node("Identity", [out], ["y"]))
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([-1e4, -12.9, 0.0, 12.7, 1e4], np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    before = sess.run(None, {"x": x})[0]
    assert activations_to_uint8(model) == 1
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(after, before)

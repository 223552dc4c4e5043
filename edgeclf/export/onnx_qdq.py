"""Make tf2onnx's QDQ ONNX files of int8 TFLite models run as onnxruntime's own quantizer's files do.

Two rewrites, both exact (the graph computes the same numbers), applied to every ``from-tflite`` and
QAT int8 ONNX file (:func:`edgeclf.export.onnx._from_tflite`):

* :func:`activations_to_uint8`: int8 activations as uint8, so onnxruntime fuses every layer on x86;
* :func:`unshare_weight_constants`: each weight ``DequantizeLinear`` its own constants, so
  onnxruntime can open the file with ``session.x64quantprecision`` (exact kernels on AVX2).

**Activations.**
tf2onnx turns an int8 TFLite file (``--onnx-int8 from-tflite``, and every QAT export) into a QDQ
graph with **int8** activations: ``DequantizeLinear -> Conv -> QuantizeLinear`` per layer. On x86,
onnxruntime does not run int8 activations in its fused kernels; its ``QDQS8ToU8Transformer``
(onnxruntime/core/optimizer/qdq_transformer/qdq_s8_to_u8.cc) first rewrites each int8 Q -> DQ pair
as uint8, but only a ``QuantizeLinear`` with exactly one consumer. Where a tensor feeds two layers
(a MobileNetV2 block output goes to the next block and to its residual ``Add``), its Q has two DQ
consumers (and onnxruntime's common-subexpression elimination merges duplicated Qs back), the pair
stays int8, and the ``Conv`` or ``Add`` on either side meets mixed int8/uint8 inputs and runs in
float between a DQ and a Q. Measured on the 160 px ``mobilenet_v2`` QAT file (onnxruntime 1.32, AMD
EPYC Zen 5): 15 of 52 Conv and all 11 Add stayed float, with 31 layout Transposes around them, and
the int8 file ran only 1.13x faster than fp32 (batch-1 p50); after this rewrite all 52 become
``QLinearConv`` and the Adds ``QLinearAdd``.

The rewrite is exact: for an int8 zero point z and int8 value q, ``uint8 = q + 128`` with zero point
``z + 128`` dequantizes to the same float, and ``QuantizeLinear``'s saturation bounds move with it
(-128..127 -> 0..255). Weights (the int8 constants a Conv/Gemm/MatMul multiplies by) stay int8:
U8S8 is onnxruntime's x86 format (on CPUs without VNNI, edgeclf's runtime sets
``session.x64quantprecision``, :mod:`edgeclf.runtime.ort`). Graph inputs and outputs keep their type.

**Shared constants.** tf2onnx stores equal constants once: 72 ``DequantizeLinear`` nodes of that
``mobilenet_v2`` file read one zero-point tensor, the per-channel zero points of layers of equal
width are one tensor, and so on (78 shared). With ``session.x64quantprecision = 1`` onnxruntime
rewrites the int8 weights (and their zero points) of each Conv/Gemm to uint8 in place, reaches a
constant it has already replaced, and refuses the file ("AddInitializedOrtValue Attempt to replace
the existing tensor", onnxruntime 1.32; measured). Giving every weight DQ its own copies fixes that
(+92 KB, 3.5 %, on the 2.66 MB file).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

#: Ops that only move int8 values (tf2onnx puts a Transpose between a Q and its DQ at NHWC/NCHW borders).
LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten"})
#: Ops whose constant DQ inputs are weights (kept int8: onnxruntime's U8S8 kernels want int8 weights).
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


def _index(graph) -> tuple[dict, dict[str, list]]:
    """(initializer name -> TensorProto, tensor name -> the nodes reading it) of an ``onnx.GraphProto``."""
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    return {t.name: t for t in graph.initializer}, consumers


def activations_to_uint8(model) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto``, changed in place) so every int8 activation is uint8.

    Converted: each ``QuantizeLinear`` with a scalar int8 zero point whose output is not a graph
    output, together with all its consumers, when they are all ``DequantizeLinear`` nodes with the
    same zero point (directly or through layout ops such as a Transpose, which move the values
    unchanged); and each ``DequantizeLinear`` of a constant int8 tensor with a scalar zero point
    none of whose consumers multiplies by it as a weight (e.g. the constant of an ``Add``).
    Initializers shared with nodes left alone are copied, never changed.

    Returns:
        The number of Q nodes and constant DQ nodes rewritten (0: nothing to do).
    """
    from onnx import numpy_helper

    graph = model.graph
    inits, consumers = _index(graph)
    outputs = {o.name for o in graph.output}
    made: dict[str, str] = {}  # int8 initializer -> its uint8 copy

    def int8_scalar(name: str) -> int | None:
        t = inits.get(name)
        if t is None:
            return None
        a = numpy_helper.to_array(t)
        return int(a.reshape(-1)[0]) if a.dtype == np.int8 and a.size == 1 else None

    def uint8_copy(name: str) -> str:
        """A uint8 initializer holding the int8 initializer ``name`` + 128 (made once per name)."""
        if name not in made:
            a = numpy_helper.to_array(inits[name]).astype(np.int16) + 128
            new_name, k = f"{name}_u8", 1
            while new_name in inits:
                new_name, k = f"{name}_u8_{k}", k + 1
            new = numpy_helper.from_array(a.astype(np.uint8), new_name)
            graph.initializer.append(new)
            inits[new.name] = new
            made[name] = new.name
        return made[name]

    def dequantizers(tensor: str, zp: int, retyped: list[str]) -> list | None:
        """The DQ nodes reading ``tensor`` (through layout ops), or None if anything else reads it, a
        DQ has another zero point, or it is a graph output; ``retyped`` collects the tensors between."""
        if tensor in outputs or not consumers[tensor]:
            return None
        found = []
        for user in consumers[tensor]:
            if user.op_type == "DequantizeLinear" and len(user.input) == 3 and int8_scalar(user.input[2]) == zp:
                found.append(user)
            elif user.op_type in LAYOUT_OPS and user.input[0] == tensor:
                retyped.append(user.output[0])
                below = dequantizers(user.output[0], zp, retyped)
                if below is None:
                    return None
                found += below
            else:
                return None
        return found

    count = 0
    changed_types: set[str] = set()
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        zp = int8_scalar(node.input[2])
        retyped = [node.output[0]]
        users = dequantizers(node.output[0], zp, retyped) if zp is not None else None
        if users is None:
            continue
        for n in (node, *users):
            n.input[2] = uint8_copy(n.input[2])
        changed_types.update(retyped)
        count += 1
    # declared int8 types of the tensors now uint8 would contradict the graph: onnxruntime infers them again
    for info in [v for v in graph.value_info if v.name in changed_types]:
        graph.value_info.remove(info)
    for node in graph.node:
        if (node.op_type != "DequantizeLinear" or len(node.input) < 3 or node.input[0] not in inits
                or int8_scalar(node.input[2]) is None
                or numpy_helper.to_array(inits[node.input[0]]).dtype != np.int8
                or any(u.op_type in WEIGHT_OPS for u in consumers[node.output[0]])):
            continue
        node.input[0] = uint8_copy(node.input[0])
        node.input[2] = uint8_copy(node.input[2])
        count += 1
    used = {name for node in graph.node for name in node.input}
    for name in made:  # int8 originals no node reads any more
        if name not in used:
            graph.initializer.remove(inits[name])
    return count


def unshare_weight_constants(model) -> int:
    """Give every weight ``DequantizeLinear`` (one feeding a Conv/ConvTranspose/MatMul/Gemm: weights and
    biases) its own copy of each constant input it shares with another node. ``model`` (an
    ``onnx.ModelProto``) is changed in place; the last user of a constant keeps the original.

    Returns:
        The number of constants copied.
    """
    from collections import Counter

    from onnx import TensorProto

    graph = model.graph
    inits, consumers = _index(graph)
    uses = Counter(name for node in graph.node for name in node.input if name in inits)
    copies = 0
    for node in graph.node:
        if (node.op_type != "DequantizeLinear" or node.input[0] not in inits
                or not any(u.op_type in WEIGHT_OPS for u in consumers[node.output[0]])):
            continue
        for i, name in enumerate(node.input):
            if uses[name] > 1:
                uses[name] -= 1
                copies += 1
                t = TensorProto()
                t.CopyFrom(inits[name])
                t.name = f"{name}__w{copies}"
                while t.name in inits:
                    t.name += "_"
                inits[t.name] = t
                graph.initializer.append(t)
                node.input[i] = t.name
    return copies

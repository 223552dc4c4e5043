"""int8 and the CPU: kernel class from (simulated) CPU flags, the ONNX recipe chosen per class, and the
runtime's one-time warning when an int8 .onnx runs on another kernel class than it was validated on.

No TensorFlow: the int8 model is a tiny Conv graph built with onnx.helper and quantized by
onnxruntime's quantize_static, as the export does.
"""

from __future__ import annotations

import collections
import json
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgeclf.export.config import AUTO_ONNX_RECIPE, OnnxInt8Recipe, choose_onnx_recipe
from edgeclf.runtime.cpu import (
    ARCH_ENV,
    FLAGS_ENV,
    Int8KernelClass,
    cpu_features,
    features_from_flags,
    kernel_class,
)

AVX2 = "fpu sse4_1 avx avx2 fma"
AVX512_NO_VNNI = AVX2 + " avx512f avx512bw avx512vl"
ZEN4 = AVX512_NO_VNNI + " avx512_vnni avx512_bf16"
ALDER_LAKE = AVX2 + " avx_vnni"


@pytest.mark.parametrize("arch, flags, expected", [
    ("x86_64", AVX2, Int8KernelClass.X86_NO_VNNI),
    ("x86_64", AVX512_NO_VNNI, Int8KernelClass.X86_NO_VNNI),
    ("x86_64", ZEN4, Int8KernelClass.X86_VNNI),
    ("x86_64", ALDER_LAKE, Int8KernelClass.X86_VNNI),
    ("x86_64", "fpu sse2 sse4_1", Int8KernelClass.X86_SSE),
    ("aarch64", "fp asimd asimddp", Int8KernelClass.ARM64),
    ("riscv64", "", Int8KernelClass.OTHER),
])
def test_kernel_class_from_flags(arch, flags, expected):
    assert kernel_class(arch, set(flags.split())) is expected
    f = features_from_flags(arch, set(flags.split()))
    assert f.kernel_class is expected and f.int8_kernel_class == expected.value
    assert f.kernel_class.saturates_u8s8 == (expected is Int8KernelClass.X86_NO_VNNI)


def test_env_simulates_another_cpu(monkeypatch):
    monkeypatch.setenv(FLAGS_ENV, AVX2)
    monkeypatch.setenv(ARCH_ENV, "x86_64")
    f = cpu_features()
    assert (f.arch, f.avx2, f.avx512, f.vnni) == ("x86_64", True, False, False)
    monkeypatch.setenv(FLAGS_ENV, "fp,asimd,asimddp")
    monkeypatch.setenv(ARCH_ENV, "aarch64")
    f = cpu_features()
    assert f.kernel_class is Int8KernelClass.ARM64 and f.dotprod and not f.avx2


@pytest.mark.parametrize("arch, flags, recipe", [
    ("x86_64", AVX2, OnnxInt8Recipe.U8S8_REDUCE_RANGE),
    ("x86_64", AVX512_NO_VNNI, OnnxInt8Recipe.U8S8_REDUCE_RANGE),
    ("x86_64", ZEN4, OnnxInt8Recipe.U8S8),
    ("aarch64", "fp asimd asimddp", OnnxInt8Recipe.S8S8),
    ("riscv64", "", OnnxInt8Recipe.U8S8_REDUCE_RANGE),
])
def test_auto_onnx_recipe_per_simulated_cpu(monkeypatch, arch, flags, recipe):
    from edgeclf.export.config import ExportConfig, resolved_onnx_recipe

    monkeypatch.setenv(FLAGS_ENV, flags)
    monkeypatch.setenv(ARCH_ENV, arch)
    assert resolved_onnx_recipe(ExportConfig()) is recipe
    # an explicit recipe is never rewritten
    assert resolved_onnx_recipe(ExportConfig(onnx_int8=OnnxInt8Recipe.S8S8)) is OnnxInt8Recipe.S8S8
    assert choose_onnx_recipe(OnnxInt8Recipe.FROM_TFLITE, cpu_features().int8_kernel_class) is OnnxInt8Recipe.FROM_TFLITE
    # a saturating CPU never gets a full-range U8S8/S8S8 file by default
    assert AUTO_ONNX_RECIPE[Int8KernelClass.X86_NO_VNNI.value] is OnnxInt8Recipe.U8S8_REDUCE_RANGE


def _int8_onnx(path, validated_on: dict | None, precision: str = "int8"):
    """A real QDQ int8 model: Conv(3->4, 3x3) -> GlobalAveragePool -> Flatten -> Softmax, NHWC input
    (Transpose first), quantized with quantize_static; edgeclf metadata embedded."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.2, (4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    scale = numpy_helper.from_array(np.array([1 / 255.0], np.float32), "scale")
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
             helper.make_node("Mul", ["nchw", "scale"], ["x"], name="rescale"),
             helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Softmax", ["f"], ["probs"], name="softmax")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 8, 8, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 4])], [w, b, scale])
    fp32 = path.with_suffix(".fp32.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    images = rng.uniform(0, 255, (16, 8, 8, 3)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"image": images[i:i + 4]} for i in range(0, 16, 4)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=["softmax"])
    model = onnx.load(str(path))
    meta = {"schema_version": 1, "name": "tiny", "input": {"height": 8, "width": 8, "channels": 3},
            "labels": ["a", "b", "c", "d"], "precision": precision, "sparsity": 0.0}
    if validated_on is not None:
        meta["validated_on"] = validated_on
    prop = model.metadata_props.add()
    prop.key, prop.value = "edgeclf", json.dumps(meta)
    onnx.save(model, str(path))
    assert any(t.data_type == TensorProto.INT8 for t in model.graph.initializer)
    return path, images


def test_runtime_warns_once_on_another_kernel_class(tmp_path, monkeypatch, caplog):
    from edgeclf.runtime import load_classifier
    from edgeclf.runtime import ort as ort_backend

    vnni = features_from_flags("x86_64", set(ZEN4.split()), "sim").to_dict()
    path, images = _int8_onnx(tmp_path / "m_int8.onnx", vnni)
    monkeypatch.setattr(ort_backend, "_warned", set())

    # validated on VNNI, running on VNNI: silent, no precision mode
    monkeypatch.setenv(FLAGS_ENV, ZEN4)
    monkeypatch.setenv(ARCH_ENV, "x86_64")
    with caplog.at_level(logging.WARNING, logger="edgeclf.runtime.ort"):
        clf = load_classifier(path)
        ref = clf.predict(images)
    assert not [r for r in caplog.records if "validated on" in r.getMessage()]
    assert clf.x64_precision is False

    # the same file on an AVX2-only CPU: one warning naming both classes, however often it is opened
    monkeypatch.setenv(FLAGS_ENV, AVX2)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgeclf.runtime.ort"):
        clfs = [load_classifier(path) for _ in range(3)]
    warnings = [r.getMessage() for r in caplog.records if "validated on" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "x86-vnni" in warnings[0] and "x86-no-vnni" in warnings[0] and "session.x64quantprecision" in warnings[0]
    assert all(c.x64_precision for c in clfs)
    # precision mode changes kernels, not the model: same predictions (this machine computes exactly either way)
    np.testing.assert_allclose(clfs[0].predict(images), ref, atol=0.02)

    # ARM: warned too (another kernel class), no x86 precision mode
    monkeypatch.setattr(ort_backend, "_warned", set())
    monkeypatch.setenv(FLAGS_ENV, "fp asimd asimddp")
    monkeypatch.setenv(ARCH_ENV, "aarch64")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgeclf.runtime.ort"):
        clf = load_classifier(path)
    assert len([r for r in caplog.records if "arm64" in r.getMessage()]) == 1 and clf.x64_precision is False


@pytest.mark.parametrize("validated_on, precision", [(None, "int8"), ("vnni", "fp32")])
def test_no_warning_without_record_or_for_float(tmp_path, monkeypatch, caplog, validated_on, precision):
    from edgeclf.runtime import load_classifier
    from edgeclf.runtime import ort as ort_backend

    record = features_from_flags("x86_64", set(ZEN4.split())).to_dict() if validated_on else None
    path, _ = _int8_onnx(tmp_path / "m.onnx", record, precision)
    monkeypatch.setattr(ort_backend, "_warned", set())
    monkeypatch.setenv(FLAGS_ENV, AVX2)
    monkeypatch.setenv(ARCH_ENV, "x86_64")
    with caplog.at_level(logging.WARNING, logger="edgeclf.runtime.ort"):
        load_classifier(path)
    assert not [r for r in caplog.records if "validated on" in r.getMessage()]


def test_precision_mode_env_override(monkeypatch):
    from edgeclf.runtime.ort import X64_PRECISION_ENV, x64_precision_mode

    avx2 = features_from_flags("x86_64", set(AVX2.split()))
    zen4 = features_from_flags("x86_64", set(ZEN4.split()))
    assert x64_precision_mode(avx2) and not x64_precision_mode(zen4)
    monkeypatch.setenv(X64_PRECISION_ENV, "0")
    assert not x64_precision_mode(avx2)
    monkeypatch.setenv(X64_PRECISION_ENV, "1")
    assert x64_precision_mode(zen4)


def _share_equal_constants(path) -> int:
    """Point DequantizeLinear inputs with equal contents at one initializer, as tf2onnx writes them
    (and edgeclf before it copied them apart); returns how many inputs were re-pointed."""
    import onnx

    model = onnx.load(str(path))
    first: dict[tuple, str] = {}
    inits = {t.name: t for t in model.graph.initializer}
    moved = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        for i, name in enumerate(node.input):
            if name in inits:
                t = inits[name]
                key = (t.data_type, tuple(t.dims), t.raw_data or onnx.numpy_helper.to_array(t).tobytes())
                if first.setdefault(key, name) != name:
                    node.input[i] = first[key]
                    moved += 1
    onnx.save(model, str(path))
    return moved


def test_from_tflite_onnx_opens_with_precision_mode_and_falls_back_without(tiny_model_dir, tmp_path, monkeypatch,
                                                                          caplog):
    """tf2onnx stores equal constants once, and onnxruntime 1.32 refuses session.x64quantprecision=1 on
    such files ("Attempt to replace the existing tensor"). Export gives each weight its own constants
    (edgeclf.export.onnx_qdq), so the file opens with the option and computes what it computes without
    it (on a VNNI CPU both kernels are exact). A file with shared constants (written by an older
    edgeclf) is opened without the option, with one warning, and computes the same."""
    import shutil

    from edgeclf.export import ExportConfig, Format, OnnxInt8Recipe, Precision, export_model
    from edgeclf.runtime import load_classifier
    from edgeclf.runtime.ort import X64_PRECISION_ENV

    d = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, d)
    export_model(d, ExportConfig(formats=(Format.ONNX,), precisions=(Precision.INT8,), calibration_samples=30,
                                 val_samples=30, onnx_int8=OnnxInt8Recipe.FROM_TFLITE, allow_drop=True),
                 progress=False)
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    # every convolution runs fused (the stem's input reaches its DQ through a Transpose)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(d / "model_int8.onnx"), opts, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert ops["QLinearConv"] == 7 and ops["Conv"] == 0, ops
    monkeypatch.setenv(X64_PRECISION_ENV, "0")
    ref = load_classifier(d / "model_int8.onnx").predict(images)
    monkeypatch.setenv(X64_PRECISION_ENV, "1")
    clf = load_classifier(d / "model_int8.onnx")
    assert clf.x64_precision is True
    with_option = clf.predict(images)
    if cpu_features().int8_kernel_class == "x86-vnni":
        np.testing.assert_array_equal(with_option, ref)
    else:  # without VNNI the reference's U8S8 kernel may saturate: the top-1 classes still agree
        assert np.mean(with_option.argmax(1) == ref.argmax(1)) >= 0.75

    old = tmp_path / "shared.onnx"
    shutil.copy(d / "model_int8.onnx", old)
    assert _share_equal_constants(old) > 0
    with caplog.at_level(logging.WARNING, logger="edgeclf.runtime.ort"):
        clf = load_classifier(old)
    assert clf.x64_precision is False
    assert [r for r in caplog.records if "cannot run this model with session.x64quantprecision=1" in r.getMessage()]
    np.testing.assert_array_equal(clf.predict(images), ref)


@pytest.mark.parametrize("text, flags, model", [
    # x86: every processor repeats its lines; the first one counts
    ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 amx_bf16\n\n"
     "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 amx_bf16\n",
     {"fpu", "avx2", "amx_bf16"}, "Intel(R) Xeon(R) Processor"),
    # Raspberry Pi 3 (32-bit kernel): no "model name" line, the board is on "Hardware"
    ("processor\t: 0\nFeatures\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt\n"
     "CPU implementer\t: 0x41\n\nHardware\t: BCM2835\nRevision\t: a02082\n",
     {"half", "thumb", "fastmult", "vfp", "edsp", "neon", "vfpv3", "tls", "vfpv4", "idiva", "idivt"}, "BCM2835"),
])
def test_read_cpuinfo(tmp_path, text, flags, model):
    from edgeclf._cpuinfo import read_cpuinfo

    (tmp_path / "cpuinfo").write_text(text)
    assert read_cpuinfo(tmp_path / "cpuinfo") == (flags, model)
    assert read_cpuinfo(tmp_path / "missing") == (set(), "")


def test_read_cpu_id_tells_apart_what_the_model_name_does_not(tmp_path):
    """Two VMs both named "AMD EPYC": the family/model of the first processor say Zen 4 vs Zen 5."""
    from edgeclf._cpuinfo import read_cpu_id
    from edgeclf._machine import cpu_id_label

    def cpuinfo(family: int, model: int) -> str:
        one = (f"processor\t: {{}}\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\nmodel\t\t: {model}\n"
               f"model name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: avx2\n")
        return one.format(0) + "\n" + one.format(1).replace(f"model\t\t: {model}", "model\t\t: 99")

    ids = []
    for family, model in ((25, 17), (26, 2)):
        (tmp_path / "cpuinfo").write_text(cpuinfo(family, model))
        ids.append(read_cpu_id(tmp_path / "cpuinfo"))
    assert ids[0] == {"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "17", "stepping": "1"}
    assert ids[1]["cpu family"] == "26" and ids[1]["model"] == "2"  # the first processor's, not the second's
    assert cpu_id_label(ids[1]) == "family 26 model 2 stepping 1"
    assert cpu_id_label(ids[1], stepping=False) == "family 26 model 2"
    assert read_cpu_id(tmp_path / "missing") == {} and cpu_id_label({}) == "" and cpu_id_label(None) == ""

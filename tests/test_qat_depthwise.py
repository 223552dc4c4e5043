"""QAT of DepthwiseConv2D kernels per channel (:mod:`edgeclf.export.qat_depthwise`) and BatchNorm
folding (:func:`edgeclf.export.qat.batchnorms_after_conv`).

The ImageNet mobilenet_v2's depthwise kernels are very uneven across channels
(``expanded_conv_depthwise``: +-56.45 against a median channel of +-1.62); tfmot's default scheme
fake-quantizes them per tensor and the QAT model started at 10 % top-1 against 90 % float
(docs/quantization.md). These tests build tiny models with one depthwise channel 56x wider than the
rest and run the real tfmot wrapping, range pass, TFLite converter and tf2onnx; no mocks.
"""

from __future__ import annotations

import json

import numpy as np

from edgeclf._keras import keras

L = keras.layers
C = 16  # depthwise channels
OUTLIER = 56.0  # the one wide channel (index 5), the rest span +-1


def _uneven_depthwise_kernel(rng, channels=C) -> np.ndarray:
    kernel = rng.uniform(-1.0, 1.0, (3, 3, channels, 1)).astype(np.float32)
    kernel[1, 1, 5, 0] = OUTLIER
    return kernel


def _set_bn(bn, rng) -> None:
    c = bn.gamma.shape[0]
    bn.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
                    rng.uniform(0.5, 2.0, c)])
    bn.trainable = False  # as the transfer models' base: inference-mode BN through QAT


def _dw_block() -> keras.Model:
    """DepthwiseConv2D (uneven) -> BN -> ReLU6 -> 1x1 Conv2D -> BN: MobileNetV2's pattern."""
    rng = np.random.default_rng(0)
    x = keras.Input((8, 8, C))
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = L.ReLU(6.0, name="relu")(L.BatchNormalization(name="bn")(y))
    y = L.BatchNormalization(name="bn2")(L.Conv2D(8, 1, use_bias=False, name="pw")(y))
    model = keras.Model(x, y)
    model.get_layer("dw").set_weights([_uneven_depthwise_kernel(rng)])
    for name in ("bn", "bn2"):
        _set_bn(model.get_layer(name), rng)
    return model


def _rel_err(out, ref) -> float:
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def test_per_channel_depthwise_qat_tracks_the_float_model_where_per_tensor_does_not():
    from edgeclf.export.qat import _calibrate_ranges, batchnorms_after_conv, wrap_for_qat

    keras.utils.set_random_seed(0)
    model = _dw_block()
    assert batchnorms_after_conv(model) == {"bn", "bn2"}
    x = np.random.default_rng(1).normal(size=(64, 8, 8, C)).astype(np.float32)
    ref = model(x, training=False).numpy()
    errors, kernel_errors = {}, {}
    for per_channel in (True, False):
        qat = wrap_for_qat(model, per_channel_depthwise=per_channel)
        _calibrate_ranges(qat, x[:32])  # the range pass quantize_aware makes before fine-tuning
        errors[per_channel] = _rel_err(qat(x, training=False).numpy(), ref)
        dw = qat.get_layer("quant_dw")
        [(kernel, quantizer, ranges)] = dw._weight_vars
        assert ranges["max_var"].shape == ((C,) if per_channel else (1,))
        fake = quantizer(kernel, False, ranges).numpy()
        kernel_errors[per_channel] = np.abs(fake - kernel.numpy()).max(axis=(0, 1, 3))  # per channel
        # no fake-quant between the depthwise conv and its BN: tfmot folded the pair
        assert not any("post_activation" in w.name for w in dw.weights)
    print("relative output error per channel / per tensor:", errors[True], errors[False])
    # measured 2026-12-01: 0.022 per channel, 0.130 per tensor (0.22 with the old NoOp BatchNorms)
    assert errors[True] < 0.05 and errors[False] > 3 * errors[True], errors
    w = np.abs(model.get_layer("dw").get_weights()[0]).max(axis=(0, 1, 3))
    np.testing.assert_array_less(kernel_errors[True], w / 127 / 2 * 1.01)  # half a step of each channel's own
    assert np.median(kernel_errors[False]) > 0.1  # per tensor: step 56/127 on channels of +-1


def test_batchnorms_after_conv_only_where_tfmot_folds():
    from edgeclf.export.qat import batchnorms_after_conv

    x = keras.Input((8, 8, 3))
    shared = L.Conv2D(4, 1, name="shared")(x)  # two consumers: tfmot's pattern does not match
    relu_conv = L.Conv2D(4, 1, activation="relu", name="relu_conv")(x)  # non-linear activation: no match
    y = L.Add()([L.BatchNormalization(name="bn_shared")(shared), L.ReLU()(shared),
                 L.BatchNormalization(name="bn_relu_conv")(relu_conv),
                 L.BatchNormalization(name="bn_ok")(L.DepthwiseConv2D(3, padding="same", name="dw")(L.Conv2D(4, 1)(x))),
                 L.BatchNormalization(name="bn_after_add")(L.Add()([L.Conv2D(4, 1)(x), L.Conv2D(4, 1)(x)]))])
    assert batchnorms_after_conv(keras.Model(x, y)) == {"bn_ok"}


def _image_model() -> keras.Model:
    """A tiny image classifier in MobileNetV2's layout: Rescaling, Conv-BN-ReLU6, uneven
    depthwise-BN-ReLU6, 1x1 Conv-BN, pooling, softmax."""
    rng = np.random.default_rng(0)
    x = keras.Input((16, 16, 3))
    y = L.Rescaling(1 / 127.5, offset=-1.0)(x)
    y = L.ReLU(6.0)(L.BatchNormalization(name="bn0")(L.Conv2D(C, 3, padding="same", use_bias=False, name="c0")(y)))
    y = L.ReLU(6.0)(L.BatchNormalization(name="bn1")(L.DepthwiseConv2D(3, padding="same", use_bias=False,
                                                                        name="dw")(y)))
    y = L.BatchNormalization(name="bn2")(L.Conv2D(8, 1, use_bias=False, name="pw")(y))
    y = L.Dense(3, activation="softmax", name="head")(L.GlobalAveragePooling2D()(y))
    model = keras.Model(x, y)
    model.get_layer("dw").set_weights([_uneven_depthwise_kernel(rng)])
    for name in ("bn0", "bn1", "bn2"):
        _set_bn(model.get_layer(name), rng)
    return model


def _interpreter(data: bytes):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    interp.allocate_tensors()
    return interp


def test_qat_export_gives_per_channel_int8_depthwise_weights_in_tflite_and_onnx(tmp_path):
    """quantize_aware (range pass + 1 fine-tuning epoch) -> the exporters the pipeline uses for a
    QAT model: TFLite converter (uint8 I/O) and tf2onnx from the int8 TFLite file."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from edgeclf.data.dataset import ArraySplit
    from edgeclf.export import onnx as onnx_export
    from edgeclf.export import tflite
    from edgeclf.export.config import ExportConfig, ExportJob, Format, Precision
    from edgeclf.export.prune import FineTune
    from edgeclf.export.qat import quantize_aware
    from edgeclf.runtime.manifest import METADATA_KEY, InputSpec, Manifest

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (48, 16, 16, 3), dtype=np.uint8)
    ft = FineTune(train=ArraySplit(x=images, labels=np.arange(48, dtype=np.int32) % 3), num_classes=3,
                  batch_size=16, lr=1e-4, label_smoothing=0.0)
    qat = quantize_aware(_image_model(), ft, 1, preserve_sparsity=False)
    x = images[:16].astype(np.float32)
    keras_probs = qat(x, training=False).numpy()

    job = ExportJob(precision=Precision.INT8, config=ExportConfig(formats=(Format.TFLITE, Format.ONNX),
                                                                  precisions=(Precision.INT8,), qat=True),
                    representative=x, quantization_aware=True,
                    metadata=Manifest(name="dw", input=InputSpec(16, 16), labels=["a", "b", "c"]).embedded_metadata(
                        Precision.INT8))
    interp = _interpreter(tflite.convert(qat, job))
    details = interp.get_tensor_details()
    assert not [d["name"] for d in details if d["dtype"] == np.float32]  # fully integer
    [dw] = [d for d in details if d["dtype"] == np.int8 and tuple(d["shape"]) == (1, 3, 3, C)]
    scales = dw["quantization_parameters"]["scales"]
    assert dw["quantization_parameters"]["quantized_dimension"] == 3 and len(scales) == C
    # each channel's own range (BN folded in), the wide channel's ~56x the others': not one range for all
    assert scales.max() / np.median(scales) > 20, scales
    ops = [op["op_name"] for op in interp._get_ops_details()]
    assert ops.count("DEPTHWISE_CONV_2D") == 1 and ops.count("MUL") == ops.count("ADD") == 1, ops  # Rescaling's:
    # the three BatchNorms are folded into their convs (with the old NoOp BatchNorms: MUL/ADD each)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    tflite_probs = []
    for image in x:
        interp.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
        interp.invoke()
        scale, zero = out["quantization"]
        tflite_probs.append((interp.get_tensor(out["index"]).astype(np.float32) - zero) * scale)
    tflite_probs = np.concatenate(tflite_probs)
    np.testing.assert_allclose(tflite_probs, keras_probs, atol=0.05)

    path = onnx_export.export_int8(qat, tmp_path / "qat_int8.onnx", job)
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    [dq] = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].dtype == np.int8 and inits[n.input[0]].shape == (C, 1, 3, 3)]
    onnx_scales = inits[dq.input[1]]
    assert onnx_scales.shape == (C,)
    np.testing.assert_allclose(np.sort(onnx_scales), np.sort(scales), rtol=1e-6)
    meta = json.loads(next(p.value for p in proto.metadata_props if p.key == METADATA_KEY))
    qin, qout = meta["input_quantization"], meta["output_quantization"]  # int8 graph I/O (from the TFLite file)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = np.clip(np.round(x / qin["scale"] + qin["zero_point"]), -128, 127).astype(np.int8)
    raw = session.run(None, {session.get_inputs()[0].name: feed})[0]
    onnx_probs = (raw.astype(np.float32) - qout["zero_point"]) * qout["scale"]
    print("max |onnx - tflite|", np.abs(onnx_probs - tflite_probs).max(), "max |tflite - keras|",
          np.abs(tflite_probs - keras_probs).max())
    np.testing.assert_allclose(onnx_probs, tflite_probs, atol=0.02)

"""Quantization settings for TFLite: the representative dataset and the converter per precision.

Full-integer int8 can be made by two tools; both are implemented, the converter is the default:

* ``tf.lite.TFLiteConverter`` post-training quantization (``Optimize.DEFAULT`` + a representative
  dataset + ``TFLITE_BUILTINS_INT8`` + int8 input/output). Per-channel symmetric int8 weights,
  per-tensor asymmetric int8 activations.
* ``ai_edge_quantizer`` (AEQ) recipe ``static_wi8_ai8`` applied to the fp32 ``.tflite``: the same
  int8 scheme (weights channel-wise symmetric, activations tensor-wise asymmetric), calibrated
  with the same images through the LiteRT interpreter.

Why the converter is kept (measured on this machine, AMD EPYC AVX2, LiteRT 2.3, 1 thread, on a
CIFAR-10 ``cnn`` width-16 checkpoint, 10 000 test images; details in docs/export.md): the same
top-1 (0.7751 both), agreement with float 0.9902 vs 0.9894, max |p - p_float| 0.068 vs 0.161, the
same size (0.436 MB) and latency (p50 0.647 vs 0.648 ms). The converter's int8 input takes raw
pixels exactly (scale 1.0, zero point -128 for [0, 255]); AEQ calibrates the input range (scale
0.991: pixels above ~252 clip) and writes weights as external buffers, so the metadata has to be
embedded before it runs. AEQ stays available with ``--tflite-int8 ai-edge-quantizer``.

Sources: https://ai.google.dev/edge/litert/models/post_training_integer_quant ,
https://github.com/google-ai-edge/ai-edge-quantizer (recipe.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edgeclf._keras import quiet_native_logs, tf
from edgeclf.export.config import Int8Io, Precision


def representative_dataset(images: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """A TFLite ``representative_dataset`` callable over float32 (N, H, W, C) [0, 255] images, one per step."""
    images = np.asarray(images, dtype=np.float32)

    def gen() -> Iterator[list[np.ndarray]]:
        for i in range(len(images)):
            yield [images[i:i + 1]]

    return gen


#: The converter's inference_input_type / inference_output_type for each --int8-io choice.
_IO_TYPES = {Int8Io.UINT8: tf.uint8, Int8Io.INT8: tf.int8, Int8Io.FLOAT32: tf.float32}


def configure_converter(converter, precision: Precision, representative: np.ndarray | None,
                        quantization_aware: bool = False, int8_io: Int8Io = Int8Io.UINT8) -> None:
    """Set ``converter`` (a ``tf.lite.TFLiteConverter``) up for ``precision``.

    FP32: no optimization. FP16: float16 weights (float32 I/O). DYNAMIC: int8 weights, float
    activations quantized at run time. INT8: full integer (int8 weights and activations) with
    ``int8_io`` input and output: uint8 (input scale 1, zero point 0 for [0, 255] pixels: the
    pixels as they are; the type MediaPipe Tasks, the Task Library and Coral take), int8 (scale 1,
    zero point -128) or float32 (quantize/dequantize ops inside). Needs ``representative`` unless
    ``quantization_aware``.

    Raises:
        ValueError: INT8 without representative images for a non-QAT model.
    """
    if precision is Precision.FP32:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision is Precision.FP16:
        converter.target_spec.supported_types = [tf.float16]
    elif precision is Precision.INT8:
        if representative is None and not quantization_aware:
            raise ValueError("int8 post-training quantization needs representative images")
        if representative is not None:
            converter.representative_dataset = representative_dataset(representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = _IO_TYPES[int8_io]
        converter.inference_output_type = _IO_TYPES[int8_io]


#: inside :func:`saved_model_cache`: (its directory, model id -> (model, its SavedModel directory)); None outside
_CACHE: tuple[Path, dict[int, tuple[object, Path]]] | None = None


@contextmanager
def saved_model_cache():
    """Inside the block, :func:`convert_keras` writes each model's SavedModel once and converts every
    later call from the same directory (the models must not change inside the block).

    Why: an export converts a QAT model twice (the int8 ``.tflite`` with ``--int8-io`` I/O, and the
    int8-I/O ``.tflite`` that tf2onnx turns into the int8 ONNX), and writing the SavedModel is most of
    a conversion. The directories are deleted when the block ends; nested blocks share the outer cache.
    """
    global _CACHE
    if _CACHE is not None:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="edgeclf-savedmodel-") as tmp:
        _CACHE = Path(tmp), {}
        try:
            yield
        finally:
            _CACHE = None


def _write_saved_model(model, path: Path) -> Path:
    """``model``'s inference function (``training=False``, batch dimension None) as a SavedModel with
    one ``serving_default`` signature at ``path``: the signature the TFLite converter's
    ``from_keras_model`` exports (input named after the model input, outputs keyed by
    ``model.output_names``), but without Keras's per-layer traces (``save_traces=False``).

    Why: ``from_keras_model`` writes the model with ``tf.saved_model.save``, which traces every layer's
    call functions, then loads them all back: 91 % of a QAT mobilenet_v2's conversion (cProfile,
    2026-12-01). Converting this directory with ``from_saved_model`` gives the same ``.tflite`` file
    except the ``CONVERSION_METADATA`` field "original model type" (SavedModel instead of Keras):
    exactly 1 byte differs (checked 2026-12-01 on the tiny ``cnn`` fp32 and int8, its QAT model, and
    the tiny ``mobilenet_v2`` int8), in 2.5-8x less time (tiny mobilenet_v2 int8: 94 s vs 227 s,
    2-core machine at idle priority beside a training run).
    """
    spec = tf.TensorSpec((None, *model.input_shape[1:]), model.inputs[0].dtype, name=model.input_names[0])

    @tf.function(input_signature=[spec])
    def serve(x):
        outputs = tf.nest.flatten(model(x, training=False))
        return dict(zip(model.output_names, outputs))

    model.save(str(path), save_format="tf", save_traces=False, include_optimizer=False,
               signatures=serve.get_concrete_function(),
               options=tf.saved_model.SaveOptions(save_debug_info=True))
    return path


def _saved_model(model, tmp: Path) -> Path:
    """``model``'s SavedModel (:func:`_write_saved_model`): from the cache inside
    :func:`saved_model_cache`, else written under ``tmp``."""
    if _CACHE is None:
        return _write_saved_model(model, tmp / "saved_model")
    root, models = _CACHE
    if id(model) not in models:  # the entry keeps the model alive, so its id is not reused
        models[id(model)] = model, _write_saved_model(model, root / f"model{len(models)}")
    return models[id(model)][1]


@contextmanager
def keras_converter(model):
    """A ``tf.lite.TFLiteConverter`` for the tf_keras ``model``, made from its SavedModel
    (:func:`_write_saved_model`; written once per model inside :func:`saved_model_cache`, else into a
    temporary directory that lives as long as the block). Native log lines are silenced inside the
    block (the int8 calibrator prints "fully_quantize: 0, inference_type: 6, ...", the SavedModel
    writer and reader their own lines). Every TFLite conversion and quantization debugger of a Keras
    model goes through here, so they all see the same graph and tensor names."""
    with tempfile.TemporaryDirectory(prefix="edgeclf-savedmodel-") as tmp, quiet_native_logs():
        yield tf.lite.TFLiteConverter.from_saved_model(str(_saved_model(model, Path(tmp))))


def convert_keras(model, precision: Precision, representative: np.ndarray | None,
                  quantization_aware: bool = False, int8_io: Int8Io = Int8Io.UINT8) -> bytes:
    """Convert a tf_keras model to ``.tflite`` bytes at ``precision`` with the TFLite converter
    (``int8_io``: the I/O type of an INT8 file, see :func:`configure_converter`), through
    :func:`keras_converter`."""
    with keras_converter(model) as converter:
        configure_converter(converter, precision, representative, quantization_aware, int8_io)
        return bytes(converter.convert())


def aeq_int8(float_tflite: bytes, representative: np.ndarray) -> bytes:
    """Full-integer int8 ``.tflite`` from an fp32 ``.tflite`` with ai_edge_quantizer's ``static_wi8_ai8``.

    Calibrates with ``representative`` (float32 (N, H, W, C) [0, 255]) on the model's first signature.

    Raises:
        ImportError: ai-edge-quantizer is not installed.
    """
    try:
        import ai_edge_quantizer as aeq
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_quantizer import recipe
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("--tflite-int8 ai-edge-quantizer needs: pip install ai-edge-quantizer") from exc
    signatures = Interpreter(model_content=float_tflite).get_signature_list()
    key = next(iter(signatures))
    input_name = signatures[key]["inputs"][0]
    quantizer = aeq.Quantizer(bytearray(float_tflite), recipe.static_wi8_ai8())
    samples = [{input_name: representative[i:i + 1].astype(np.float32)} for i in range(len(representative))]
    calibration = quantizer.calibrate({key: samples}, num_threads=1)
    result = quantizer.quantize(calibration, enable_progress_report=False)
    return bytes(result.quantized_model)


def selective_int8(model, representative: np.ndarray, float_layers: tuple[str, ...]) -> bytes:
    """int8 ``.tflite`` bytes of a tf_keras model with the layers whose output tensors are named in
    ``float_layers`` kept in float (TFLite selective quantization).

    Uses ``tf.lite.experimental.QuantizationDebugger`` with ``QuantizationDebugOptions(denylisted_nodes=...)``
    and ``get_nondebug_quantized_model()``: the same MLIR quantizer and calibration as the converter's
    post-training int8, minus those ops. The file has float32 input/output (quantize / dequantize
    ops inside), since float ops stay in the graph.

    Source: https://www.tensorflow.org/lite/performance/quantization_debugger (selective quantization).
    """
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_layers))
    with keras_converter(model) as converter:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(representative)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset(representative[:1]), debug_options=options)
        return bytes(debugger.get_nondebug_quantized_model())

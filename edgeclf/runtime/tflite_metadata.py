"""Read and write named metadata entries inside a ``.tflite`` flatbuffer (no TensorFlow).

A TFLite model has a ``metadata`` vector of ``{name, buffer}`` entries, the buffer index pointing
into ``model.buffers``. edgeclf stores its JSON (see :mod:`edgeclf.runtime.manifest`) under the
name ``"edgeclf"``; the export stage writes it with :func:`add_metadata`, the runtime reads it with
:func:`read_metadata`. The standard ``"TFLITE_METADATA"`` entry goes through the same two functions
(:mod:`edgeclf.export.metadata` writes it, :mod:`edgeclf.runtime.tflite_model_metadata` parses it);
re-packing drops an appended associated-files archive, so that archive is appended last. Everything else in the model (subgraphs, weights, the converter's own
metadata such as ``min_runtime_version``) is preserved; weight buffers are re-packed 16-byte
aligned, as the TFLite converter writes them.

Uses ``ai_edge_litert.schema_py_generated`` (the flatbuffer schema bindings shipped with LiteRT)
and ``flatbuffers``.
"""

from __future__ import annotations

import struct

import numpy as np

from edgeclf.errors import ManifestError

TFLITE_FILE_IDENTIFIER = b"TFL3"
_BUFFER_ALIGNMENT = 16


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("reading .tflite metadata needs LiteRT: pip install ai-edge-litert") from exc
    return schema


def _root(schema, tflite_bytes: bytes):
    buf = bytearray(tflite_bytes) if not isinstance(tflite_bytes, (bytes, bytearray)) else tflite_bytes
    if len(buf) < 8 or bytes(buf[4:8]) != TFLITE_FILE_IDENTIFIER:
        raise ManifestError("not a TFLite flatbuffer (file identifier 'TFL3' missing)")
    return buf, schema.Model.GetRootAs(buf, 0)


def read_metadata(tflite_bytes: bytes, name: str) -> bytes | None:
    """The bytes of metadata entry ``name`` in a TFLite model, or None if it has no such entry.

    Args:
        tflite_bytes: the whole ``.tflite`` file.
        name: metadata entry name, e.g. ``"edgeclf"``.

    Raises:
        ManifestError (a ValueError): not a TFLite flatbuffer, or a corrupt metadata table (e.g. an
            entry pointing outside the model's buffers).
    """
    schema = _schema()
    buf, model = _root(schema, tflite_bytes)
    try:
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            entry_name = entry.Name()
            if entry_name is None or entry_name.decode("utf-8", "replace") != name:
                continue
            idx = entry.Buffer()
            if idx >= model.BuffersLength():
                raise ManifestError(f"metadata '{name}' points at buffer {idx}, model has {model.BuffersLength()}")
            b = model.Buffers(idx)
            if b.Offset() > 1:  # large models keep buffers after the flatbuffer
                return bytes(buf[b.Offset(): b.Offset() + b.Size()])
            return b"" if b.DataIsNone() else b.DataAsNumpy().tobytes()
    except ManifestError:
        raise
    except (IndexError, UnicodeDecodeError, TypeError, ValueError, struct.error, OverflowError) as exc:  # corrupt tables
        raise ManifestError(f"corrupt TFLite metadata table ({exc})") from None
    return None


def list_metadata(tflite_bytes: bytes) -> list[str]:
    """Names of all metadata entries in a TFLite model (e.g. ``["min_runtime_version", "edgeclf"]``)."""
    schema = _schema()
    _, model = _root(schema, tflite_bytes)
    return [model.Metadata(i).Name().decode("utf-8", "replace") for i in range(model.MetadataLength())]


def _aligned_builder_class():
    import flatbuffers

    class _AlignedBuilder(flatbuffers.Builder):
        """Builder that aligns byte vectors (weight buffers) to 16 bytes, like the converter does."""

        def CreateNumpyVector(self, x):
            if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.size >= _BUFFER_ALIGNMENT:
                self.StartVector(1, x.size, _BUFFER_ALIGNMENT)
                payload = x.tobytes(order="C")
                self.head = self.head - len(payload)
                self.Bytes[self.head:self.head + len(payload)] = payload
                self.vectorNumElems = x.size
                return self.EndVector()
            return super().CreateNumpyVector(x)

    return _AlignedBuilder


def add_metadata(tflite_bytes: bytes, name: str, data: bytes) -> bytes:
    """Return a copy of a TFLite model with metadata entry ``name`` set to ``data``.

    An existing entry of the same name is replaced; everything else is kept. The result still
    carries the ``"TFL3"`` file identifier and runs in LiteRT with identical outputs.

    Args:
        tflite_bytes: the whole ``.tflite`` file.
        name: metadata entry name (``"edgeclf"`` for the runtime's JSON).
        data: the entry's payload, e.g. UTF-8 JSON.

    Raises:
        ValueError: not a TFLite flatbuffer, or a model > 2 GB whose buffers live outside the
            flatbuffer (re-packing would break their offsets).
    """
    schema = _schema()
    buf, model = _root(schema, tflite_bytes)
    for i in range(model.BuffersLength()):
        if model.Buffers(i).Offset() > 1:
            raise ValueError("models with external (offset) buffers, i.e. > 2 GB, are not supported")
    obj = schema.ModelT.InitFromObj(model)
    if obj.buffers is None:
        obj.buffers = []
    if obj.metadata is None:
        obj.metadata = []
    payload = np.frombuffer(bytes(data), dtype=np.uint8).copy()
    for entry in obj.metadata:
        entry_name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if entry_name == name:
            obj.buffers[entry.buffer].data = payload
            break
    else:
        new_buffer = schema.BufferT()
        new_buffer.data = payload
        obj.buffers.append(new_buffer)
        meta = schema.MetadataT()
        meta.name = name
        meta.buffer = len(obj.buffers) - 1
        obj.metadata.append(meta)
    builder = _aligned_builder_class()(max(1024, len(buf) + len(payload) + 4096))
    builder.Finish(obj.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    return bytes(builder.Output())

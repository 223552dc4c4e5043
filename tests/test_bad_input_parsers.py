"""Property-based tests (Hypothesis) of every parser that reads untrusted bytes: manifest.json, the
edgeclf JSON embedded in artifacts, the TFLite metadata tables (edgeclf entry + standard Model
Metadata + the packed labels archive), labels files and image files.

The property: on any input a parser either returns a valid object or raises an
:class:`~edgeclf.errors.EdgeclfError` subclass (one line, naming the source); never another
exception, never a half-valid object. Inputs are arbitrary bytes/JSON, and mutations (flipped,
replaced, truncated, spliced bytes) of real files, which reach much deeper into the formats.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from _runtime_fixtures import build_models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeclf.errors import EdgeclfError
from edgeclf.preprocess import load_image
from edgeclf.runtime.loader import read_labels
from edgeclf.runtime.manifest import (
    InputSpec,
    Manifest,
    embedded_essentials,
    parse_embedded,
    read_manifest,
)
from edgeclf.runtime.tflite_metadata import read_metadata
from edgeclf.runtime.tflite_model_metadata import StandardMetadata, read_standard_metadata

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)


class Seed:
    """Bytes of a real file to mutate (a short repr keeps Hypothesis' failure reports readable)."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.data = name, data

    def __repr__(self) -> str:
        return f"Seed({self.name}, {len(self.data)} bytes)"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory)


@pytest.fixture(scope="module")
def good_manifest(models) -> dict:
    return json.loads((models.model_dir / "manifest.json").read_text())


@st.composite
def mutated(draw, data: bytes, max_edits: int = 6) -> bytes:
    """``data`` with a few random byte edits: flip, set, delete a run, insert a run, or truncate."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, max_edits))):
        if not buf:
            break
        i = draw(st.integers(0, len(buf) - 1))
        op = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]))
        if op == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            buf[i] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif op == "delete":
            del buf[i:i + draw(st.integers(1, 16))]
        elif op == "insert":
            buf[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            del buf[i:]
    return bytes(buf)


def _valid_manifest(m: Manifest) -> None:
    assert isinstance(m.input, InputSpec) and m.input.height >= 1 and m.input.width >= 1
    assert m.input.channels in (1, 3) and 0.0 not in m.input.std
    assert m.labels and all(isinstance(x, str) and x.strip() for x in m.labels)
    for a in m.artifacts:
        assert a.file == Path(a.file).name and a.file not in ("", ".", "..")
        assert a.sha256 is None or len(a.sha256) == 64


# -- manifest.json ---------------------------------------------------------------------------------
@FAST
@given(doc=JSON)
def test_manifest_from_any_json_value(doc):
    try:
        m = Manifest.from_dict(doc, source="m.json")
    except EdgeclfError as exc:
        assert "m.json" in str(exc) and "\n" not in str(exc)
        return
    _valid_manifest(m)


@FAST
@given(data=st.data())
def test_manifest_with_fields_replaced(good_manifest, data):
    doc = json.loads(json.dumps(good_manifest))
    target = doc if data.draw(st.booleans()) else data.draw(st.sampled_from([doc["input"], *doc["artifacts"]]))
    key = data.draw(st.sampled_from(sorted(target)) | st.text(max_size=8))
    target[key] = data.draw(JSON)
    try:
        m = Manifest.from_dict(doc, source="m.json")
    except EdgeclfError:
        return
    _valid_manifest(m)


@FAST
@given(data=st.data())
def test_manifest_file_bytes(models, scratch, data):
    good = (models.model_dir / "manifest.json").read_bytes()
    raw = data.draw(mutated(good) | st.binary(max_size=200))
    (scratch / "manifest.json").write_bytes(raw)
    try:
        m = read_manifest(scratch)
    except EdgeclfError as exc:
        assert "manifest.json" in str(exc)
        return
    _valid_manifest(m)


# -- embedded edgeclf metadata (ONNX metadata_props / TFLite entry) --------------------------------
@FAST
@given(raw=st.binary(max_size=120) | st.text(max_size=120) | JSON.map(json.dumps))
def test_embedded_json(raw):
    try:
        meta = parse_embedded(raw, "m.onnx")
    except EdgeclfError as exc:
        assert "m.onnx" in str(exc)
        return
    assert isinstance(meta, dict)


@FAST
@given(data=st.data())
def test_embedded_essentials(good_manifest, data):
    meta = {"schema_version": 1, "input": dict(good_manifest["input"]), "labels": list(good_manifest["labels"]),
            "precision": "int8"}
    target = meta if data.draw(st.booleans()) else meta["input"]
    target[data.draw(st.sampled_from(sorted(target)))] = data.draw(JSON)
    try:
        spec, labels, precision = embedded_essentials(meta, "m.tflite")
    except EdgeclfError as exc:
        assert "m.tflite" in str(exc)
        return
    assert isinstance(spec, InputSpec) and spec.height >= 1 and labels and all(isinstance(x, str) for x in labels)
    assert precision is None or precision in ("fp32", "fp16", "dynamic", "int8")


# -- TFLite metadata tables ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tflite_with_metadata(models) -> Seed:
    """The int8 test model with the edgeclf entry, the standard Model Metadata and a labels archive."""
    from edgeclf.export.metadata import embed

    meta = json.loads(json.dumps({**json.loads(read_metadata((models.model_dir / "model_int8.tflite").read_bytes(),
                                                              "edgeclf")), "name": "tiny"}))
    data = embed((models.bare_dir / "model_int8.tflite").read_bytes(), meta)
    std = read_standard_metadata(data)
    assert std is not None and std.labels == ["red", "green", "blue"]  # the seed parses fully
    return Seed("model_int8.tflite with metadata", data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_tflite_metadata_tables(tflite_with_metadata, data):
    raw = data.draw(mutated(tflite_with_metadata.data, max_edits=3))
    for call in (lambda: read_metadata(raw, "edgeclf"), lambda: read_standard_metadata(raw)):
        try:
            out = call()
        except EdgeclfError as exc:
            assert "\n" not in str(exc)
            continue
        assert out is None or isinstance(out, (bytes, StandardMetadata))
        if isinstance(out, StandardMetadata) and out.labels is not None:
            assert out.labels and all(isinstance(x, str) and x for x in out.labels)


# -- labels files ----------------------------------------------------------------------------------
@FAST
@given(raw=st.binary(max_size=80) | st.text(max_size=80).map(str.encode))
def test_labels_file(scratch, raw):
    path = scratch / "labels.txt"
    path.write_bytes(raw)
    try:
        labels = read_labels(path)
    except EdgeclfError as exc:
        assert str(path) in str(exc)
        return
    assert labels and all(isinstance(x, str) and x and x == x.strip() for x in labels)


# -- image files -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_seeds() -> list[Seed]:
    img = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    return [Seed(ext, cv2.imencode(ext, img)[1].tobytes()) for ext in (".png", ".jpg", ".bmp", ".webp")]


@FAST
@given(data=st.data())
def test_image_headers_and_bodies(image_seeds, scratch, data):
    seed = data.draw(st.sampled_from(image_seeds)).data
    raw = data.draw(mutated(seed[:64], max_edits=4).map(lambda head: head + seed[64:]) | mutated(seed)
                    | st.binary(max_size=64))
    path = scratch / "image.png"
    path.write_bytes(raw)
    try:
        img = load_image(path)
    except EdgeclfError as exc:
        assert str(path) in str(exc)
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 1

"""Versions of edgeclf's tool chain, read from installed distribution metadata (nothing is imported).

The one list used by ``metrics.json`` (train), ``manifest.json`` (export, per artifact) and
``machine.json`` (bench).
"""

from __future__ import annotations

from importlib import metadata

#: Short name (the key written to JSON) -> distribution name on PyPI.
TOOLS: dict[str, str] = {
    "numpy": "numpy",
    "opencv": "opencv-python-headless",
    "tensorflow": "tensorflow",
    "tf_keras": "tf-keras",
    "tfmot": "tensorflow-model-optimization",
    "tf2onnx": "tf2onnx",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "ai_edge_litert": "ai-edge-litert",
    "ai_edge_quantizer": "ai-edge-quantizer",
}


def tool_versions() -> dict[str, str]:
    """``{short name: version}`` of every installed distribution in :data:`TOOLS` (missing ones are left out)."""
    out = {}
    for key, dist in TOOLS.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out

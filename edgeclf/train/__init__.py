"""Training: ``train(cfg) -> TrainResult`` fits a model and writes its model directory.

``edgeclf.train.config`` (TrainConfig, load_config) imports no TensorFlow; ``train`` and
``TrainResult`` are loaded from :mod:`edgeclf.train.loop` (TensorFlow) on first use.
"""

from __future__ import annotations

from edgeclf.train.config import ClassWeight, Optimizer, TrainConfig, load_config

__all__ = ["ClassWeight", "Optimizer", "TrainConfig", "TrainResult", "load_config", "train"]


def __getattr__(name: str):
    if name in ("train", "TrainResult"):
        from edgeclf.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'edgeclf.train' has no attribute {name!r}")

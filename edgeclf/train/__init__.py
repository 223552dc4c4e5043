"""Training: ``train(cfg) -> TrainResult`` fits a model and writes its model directory;
``resume(path) -> TrainResult`` continues an interrupted run from its checkpoint.

``edgeclf.train.config`` (TrainConfig, DistillConfig, load_config) imports no TensorFlow; ``train``,
``resume`` and ``TrainResult`` are loaded from :mod:`edgeclf.train.loop` (TensorFlow) on first use.
"""

from __future__ import annotations

from edgeclf.train.config import (
    ClassWeight,
    DistillConfig,
    Optimizer,
    TeacherTargets,
    TrainConfig,
    load_config,
)

__all__ = ["ClassWeight", "DistillConfig", "Optimizer", "TeacherTargets", "TrainConfig", "TrainResult",
           "load_config", "resume", "train"]


def __getattr__(name: str):
    if name in ("train", "resume", "TrainResult"):
        from edgeclf.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'edgeclf.train' has no attribute {name!r}")

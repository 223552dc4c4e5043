"""``mobilenet_v2``: MobileNetV2 (Sandler et al. 2018) transfer learning, built by :mod:`edgeclf.models.transfer`.

Kept as a module so code written against earlier edgeclf versions (``mobilenet_v2.build``,
``base_model``, ``set_base_trainable``, ``check_weights``, ``WeightsError``) keeps working; the model
(name ``mobilenet_v2``; layers ``grey_to_rgb``, ``resize``, ``normalize``, the nested
``mobilenetv2_*`` base, ``pool``, ``dropout``, ``logits``, ``probs``) is the one it always built.
"""

from __future__ import annotations

from edgeclf.errors import WeightsError
from edgeclf.models.transfer import base_model, build, check_weights, set_base_trainable

__all__ = ["WeightsError", "base_model", "build", "check_weights", "set_base_trainable"]

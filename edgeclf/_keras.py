"""The only module that imports TensorFlow and tf_keras, and the one that quiets their logs.

tensorflow-model-optimization works only with Keras 2 (``tf_keras``), so ``TF_USE_LEGACY_KERAS=1``
is set here before TensorFlow is imported; every other module gets ``tf`` and ``keras`` from here.

Quiet by default. One switch, TensorFlow's own ``TF_CPP_MIN_LOG_LEVEL`` (set to 3 here unless the
environment sets it; ``edgeclf -v`` sets 0), decides what TensorFlow may print:

* C++ log lines below that level are dropped. TF filters most itself, but not the lines its
  libraries print while they load (``oneDNN custom operations are on``, ``Could not find cuda
  drivers``, absl's ``WARNING: All log messages before absl::InitializeLog() ...``), so the import
  runs with file descriptor 2 captured and only those lines are dropped (anything else is written
  back). At level 3 the ``E0000 ... failed call to cuInit: ... CUDA error`` line of a machine
  without a GPU is dropped by TF itself;
* at level >= 1, Python warnings that are noise for edgeclf users are filtered: the converter's
  "Statistics for quantized inputs were expected" (edgeclf calibrates on purpose) and
  ``tf.lite.Interpreter is deprecated`` (tf2onnx uses it; edgeclf runs LiteRT). Other warnings show;
* :func:`quiet_native_logs` does the same fd-2 filtering around a converter call (the int8
  calibrator prints ``fully_quantize: 0, inference_type: 6, ...`` with printf; TF's own
  ``tf.lite.Interpreter``, which tf2onnx runs, prints ``INFO: Created TensorFlow Lite XNNPACK
  delegate for CPU.``).

``absl`` / ``tensorflow`` Python loggers are set by the CLI (``edgeclf/cli/__init__.py``).
"""

from __future__ import annotations

import os
import re
import warnings

from edgeclf._stderr import filtered_native_stderr, min_log_level  # noqa: E402  (a leaf: no edgeclf imports)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["TF_USE_LEGACY_KERAS"] = "1"

_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d")
_NOISE_PREFIXES = ("WARNING: All log messages before absl::InitializeLog()",
                   "To enable the following instructions:", "fully_quantize: ",
                   "INFO: Created TensorFlow Lite XNNPACK delegate")


_level = min_log_level


def _hidden(line: str, level: int) -> bool:
    """True for a C++ log line below ``level`` (I=0, W=1, E=2, F=3) or, at level >= 1, a known start-up notice."""
    if level >= 1 and line.startswith(_NOISE_PREFIXES):
        return True
    m = _ABSL_LINE.match(line)
    return bool(m) and "IWEF".index(m.group(1)) < level


def quiet_native_logs():
    """Capture file descriptor 2 inside the block and write back every line that is not a hidden log line.

    What native code prints is held until the block ends; at ``TF_CPP_MIN_LOG_LEVEL`` 0 nothing is
    dropped. If fd 2 cannot be duplicated the block runs unfiltered (:func:`edgeclf._stderr.filtered_native_stderr`).
    """
    level = _level()
    return filtered_native_stderr(lambda line: _hidden(line, level))

if _level() >= 1:
    warnings.filterwarnings("ignore", message=r"Statistics for quantized inputs were expected", category=UserWarning)
    warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated", category=UserWarning)

try:
    with quiet_native_logs():
        import tensorflow as tf
        import tf_keras as keras
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "edgeclf training/export needs TensorFlow and tf_keras: pip install 'edgeclf[train]' "
        "(the runtime alone only needs 'edgeclf[runtime]')"
    ) from exc

__all__ = ["keras", "quiet_native_logs", "set_seed", "tf"]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (``keras.utils.set_random_seed``) for reproducible runs."""
    keras.utils.set_random_seed(int(seed))

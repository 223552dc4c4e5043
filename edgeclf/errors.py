"""The one error hierarchy of edgeclf (no heavy imports).

Every error a user can cause (bad data, a bad option, a missing or corrupt model file, a failed
accuracy gate, an unusable camera) is an :class:`EdgeclfError` whose message is one line naming the
user's file, directory or option. The CLI prints it as ``Error: <message>`` and exits non-zero, as
it does for ``OSError`` (permissions, a full disk, a file where a directory should be); any other
exception is a bug in edgeclf and keeps its traceback.

The subclasses also derive from the built-in they replaced (``ValueError`` or ``RuntimeError``), so
library code written against those keeps working. Pattern: optimum ``exporters/error_utils.py``,
nncf ``errors.py``.
"""

from __future__ import annotations


def one_line(exc: BaseException | str) -> str:
    """The first non-empty line of ``str(exc)`` (an exception's type name if it has no message)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__ if isinstance(exc, BaseException) else ""


class EdgeclfError(Exception):
    """Base class of every error edgeclf raises on purpose. The message is one line."""


class ConfigError(EdgeclfError, ValueError):
    """A configuration value or a combination of options is invalid, or a saved config.json is malformed."""


class DataError(EdgeclfError, ValueError):
    """The data is missing or unusable. The message names the directory or file and the problem."""


class ImageError(EdgeclfError, ValueError):
    """An image file is missing, unreadable or not an image. The message names the file."""


class WeightsError(EdgeclfError, ValueError):
    """Requested pretrained weights could not be loaded. The message says what to do."""


class ModelLoadError(EdgeclfError, RuntimeError):
    """A model file is missing, corrupt, of an unknown format, or lacks what the runtime needs.

    The message is one line and names the file.
    """


class ManifestError(EdgeclfError, ValueError):
    """manifest.json or embedded metadata is missing, malformed or newer than this edgeclf. Names the file."""


class ExportError(EdgeclfError, RuntimeError):
    """An export step failed or produced an unusable artifact (a converter raised on the model, an int8
    file without int8 weights). ``result``: the partial ExportResult when raised at the end of an
    export whose other artifacts were made, else None."""

    def __init__(self, message: str, result=None) -> None:
        super().__init__(message)
        self.result = result


class AccuracyGateError(EdgeclfError, RuntimeError):
    """One or more artifacts lost more accuracy than allowed. ``result`` is the partial ExportResult."""

    def __init__(self, message: str, result=None) -> None:
        super().__init__(message)
        self.result = result


class SourceError(EdgeclfError, ValueError):
    """An image path or pattern names nothing usable. The message is one line."""


class PredictError(EdgeclfError, RuntimeError):
    """Prediction could not produce any result (e.g. every image failed to decode). One line."""


class CameraError(EdgeclfError, RuntimeError):
    """The camera/video/stream source cannot be opened, or the video cannot be saved. One line."""


class BenchError(EdgeclfError, RuntimeError):
    """A benchmark cannot run (no artifacts, unusable options). One line."""


__all__ = ["AccuracyGateError", "BenchError", "CameraError", "ConfigError", "DataError", "EdgeclfError",
           "ExportError", "ImageError", "ManifestError", "ModelLoadError", "PredictError", "SourceError",
           "WeightsError", "one_line"]

"""How the CLI reports failures: one ``Error: ...`` line and a non-zero exit for what a user can cause.

:class:`~edgeclf.errors.EdgeclfError` (bad data, options, model files, a failed gate) and ``OSError``
(permissions, a full disk, a file where a directory should be) become a ``click.ClickException``
(exit 1) with one line naming the user's file; anything else is an edgeclf bug and keeps its
traceback.
"""

from __future__ import annotations

import functools
import os

import click

from edgeclf.errors import EdgeclfError, one_line


def os_error_line(exc: OSError) -> str:
    """``<file>: <reason>`` for an OSError, e.g. ``export/m/model.onnx: Permission denied``."""
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else None) or one_line(exc)
    names = [str(f) for f in (exc.filename, exc.filename2) if f]
    return f"{' -> '.join(names)}: {reason}" if names else reason


def user_errors(fn):
    """Decorate a click command so EdgeclfError/OSError end in one ``Error:`` line (exit 1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except EdgeclfError as exc:
            raise click.ClickException(one_line(exc)) from None
        except OSError as exc:
            raise click.ClickException(os_error_line(exc)) from None

    return wrapper

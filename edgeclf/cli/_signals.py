"""SIGTERM behaves like Ctrl-C in every command, then exits with status 128 + 15.

``kill PID``, ``timeout``, systemd, Docker and CI runners stop a process with SIGTERM, whose default
action ends Python at once: no ``finally``, no ``atexit``, so a bench worker keeps running and
temporary files and directories stay behind. :func:`install` makes the first SIGTERM raise
:class:`Terminated` (a ``KeyboardInterrupt``) in the main thread instead, so the paths that already
handle Ctrl-C run unchanged: ``train`` keeps the best weights so far and its checkpoint, ``export``
removes the artifact being written (earlier ones and manifest.json stay consistent), ``predict``
writes nothing, ``webcam`` ends its loop and reports its stats, ``bench`` ends its worker and
removes its scratch directory. A second SIGTERM while that clean-up runs is ignored (the clean-up
is short; SIGKILL still stops everything). :func:`exit_status` then turns the command's outcome into
exit status ``128 + signum`` (143), the shell convention for "ended by SIGTERM".
"""

from __future__ import annotations

import signal
import threading

#: The signals handled like Ctrl-C (SIGINT keeps Python's own handler: KeyboardInterrupt).
SIGNALS = (signal.SIGTERM,)


class Terminated(KeyboardInterrupt):  # noqa: N818 - named after the event, like KeyboardInterrupt
    """Raised in the main thread when the process receives SIGTERM; ``signum`` is the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


_received: list[int] = []


def _handler(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    if _received:  # already cleaning up after the first one: let that finish
        return
    _received.append(signum)
    raise Terminated(signum)


def install() -> bool:
    """Install the handler for :data:`SIGNALS`; returns False (doing nothing) off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return False
    _received.clear()
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    return True


def received() -> int | None:
    """The signal number received since :func:`install`, or None."""
    return _received[0] if _received else None


def exit_status(signum: int) -> int:
    """The shell's exit status for a process ended by ``signum``: 128 + signum (143 for SIGTERM)."""
    return 128 + int(signum)

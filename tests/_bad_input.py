"""Shared checks of the bad-input suite (tests/test_bad_input*.py).

The contract every case asserts: a non-zero exit code, no traceback, exactly one ``Error:`` line
that names the user's input (never an internal temporary name), and no partial or temporary file
left in the model directory, the output directory or ``$TMPDIR`` (a fresh directory per test:
the ``tmpdir_env`` fixture of tests/conftest.py).
Commands run in-process through click's CliRunner (fast: TensorFlow is imported once per session);
the signal tests run a real subprocess (see test_bad_input_signals.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from click.testing import CliRunner

from edgeclf.cli import cli

TEMP_MARKS = (".tmp", ".partial-", ".new-", ".old-", "edgeclf-", "__autograph_generated")


def run(args) -> tuple[int, str, BaseException | None]:
    """Run ``edgeclf ARGS`` in-process: -> (exit code, stdout + stderr, unexpected exception or None)."""
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    exc = None if r.exception is None or isinstance(r.exception, SystemExit) else r.exception
    return r.exit_code, r.output, exc


def one_error(args, *names, code: int | None = None) -> str:
    """Run ``args``; assert the contract and that the Error line contains every string of ``names``.

    Returns the Error line."""
    rc, out, exc = run(args)
    assert exc is None, f"unexpected {type(exc).__name__}: {exc}\n{out}"
    assert rc != 0 and (code is None or rc == code), (rc, out)
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, out
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    assert not any(m in lines[0] for m in (".tmp", ".partial-", ".new-")), lines[0]
    return lines[0]


def no_temp_files(*dirs: Path) -> None:
    """No temporary or partial file or directory below any of ``dirs``."""
    for d in dirs:
        left = [p for p in Path(d).rglob("*") if any(m in p.name for m in TEMP_MARKS)]
        assert not left, left


#: Files other programs keep in $TMPDIR on purpose, under a fixed name (so they never pile up):
#: onnxruntime >= 1.2x writes a session id to ``$TMPDIR/.ses`` when it loads (or fails to load) a model.
NOT_OURS = {".ses"}


def empty(d: Path) -> None:
    """``d`` (a test's $TMPDIR) holds nothing but :data:`NOT_OURS`."""
    left = sorted(set(os.listdir(d)) - NOT_OURS)
    assert left == [], left


def snapshot(d: Path) -> dict[str, str]:
    """relative path -> sha256 of every file ('<dir>' for directories) below ``d``."""
    return {str(p.relative_to(d)): "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(d).rglob("*"))}


def with_hashes(model_dir: Path) -> Path:
    """Record every listed artifact's sha256 in ``model_dir``/manifest.json (as export does)."""
    path = model_dir / "manifest.json"
    m = json.loads(path.read_text())
    for a in m["artifacts"]:
        a["sha256"] = hashlib.sha256((model_dir / a["file"]).read_bytes()).hexdigest()
    path.write_text(json.dumps(m))
    return model_dir

"""The CLI runner shared by the test files that drive ``edgeclf`` in-process."""

from __future__ import annotations

from click.testing import CliRunner, Result

from edgeclf.cli import cli


def run_cli(args) -> Result:
    """Invoke ``edgeclf`` with ``args`` (stringified); assert no traceback and an exit code of 0, 1 or 2."""
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in r.output
    if r.exit_code not in (0, 1, 2):
        raise AssertionError(f"exit {r.exit_code}: {r.output}") from r.exception
    return r

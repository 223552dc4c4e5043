"""Option parsers shared by the commands (each raises ``click.BadParameter`` naming the option)."""

from __future__ import annotations

import click


def parse_size(value: str | None, param_hint: str = "--input-size") -> tuple[int, int] | None:
    """``"32"`` -> (32, 32); ``"48x64"`` or ``"48,64"`` -> (48, 64) (height, width in pixels); None -> None."""
    if not value:
        return None
    parts = value.lower().replace(" ", "").replace(",", "x").split("x")
    if len(parts) == 1:
        parts *= 2
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HxW (e.g. 32x32) or a single size", param_hint=param_hint) from None
    if h < 1 or w < 1:
        raise click.BadParameter(f"{value!r} must be two positive integers HxW", param_hint=param_hint)
    return h, w


def parse_floats(value: str | None, name: str) -> tuple[float, ...] | None:
    """``"127.5"`` or ``"123.7,116.3,103.5"`` -> a tuple of 1 or 3 floats; None -> None."""
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers", param_hint=name) from None
    if len(out) not in (1, 3):
        raise click.BadParameter(f"give 1 or 3 values, got {len(out)}", param_hint=name)
    return out

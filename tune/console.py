"""The one console every `medtune` command prints through."""

from __future__ import annotations

from rich.console import Console


def make_console() -> Console:
    """A console that keeps each printed line whole: without a terminal (a pipe, a CI log,
    `| tee sweep.log`) rich would wrap at 80 columns, splitting a trial's or the sweep's line
    where someone greps it. In a terminal, the terminal wraps what is too long."""
    return Console(highlight=False, soft_wrap=True)


def duration(seconds: float) -> str:
    """`52 s`, `4 min 2 s`, `1 h 3 min`."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"

"""The one console every `medtune` command prints through."""

from __future__ import annotations

from rich.console import Console


def make_console() -> Console:
    """A console that keeps each printed line whole: without a terminal (a pipe, a CI log,
    `| tee sweep.log`) rich would wrap at 80 columns, splitting a trial's or the sweep's line
    where someone greps it. In a terminal, the terminal wraps what is too long."""
    return Console(highlight=False, soft_wrap=True)

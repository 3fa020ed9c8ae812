"""The benchmarks' terminal: one console for their tables, a progress bar, and how a duration reads in a cell."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

# Tables are wider than the 80 columns rich assumes when output is not a terminal (a log, CI, a pipe).
console = Console(width=None if sys.stdout.isatty() else 160)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def ms(value: float | None, digits: int = 1) -> str:
    """A table cell for a duration in ms ('-' when there was nothing to measure)."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.{digits + 1}f}"
    return f"{value:.{digits}f}" if value < 100 else f"{value:.0f}"

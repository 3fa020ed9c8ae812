"""The benchmarks' terminal: one console for their tables, progress bars, and how a duration reads in a cell."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

# Tables are wider than the 80 columns rich assumes when output is not a terminal (a log, CI, a pipe).
console = Console(width=None if sys.stdout.isatty() else 160)


class Bars:
    """Two progress bars: the runs done, and what runs now (its `detail` says how far it got)."""

    def __init__(self, what: str, runs: int) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.runs = self.progress.add_task(what, total=runs, detail="")
        self.current = self.progress.add_task("", total=1, detail="")

    def now(self, description: str, **fields: Any) -> None:
        self.progress.update(self.current, description=description, **{"detail": "", **fields})


def ms(value: float | None, digits: int = 1) -> str:
    """A table cell for a duration in ms ('-' when there was nothing to measure)."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.{digits + 1}f}"
    return f"{value:.{digits}f}" if value < 100 else f"{value:.0f}"

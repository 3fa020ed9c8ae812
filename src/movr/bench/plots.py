"""What every experiment's PNG shares: matplotlib set up once (no display), and how a figure is written.

Titles are wrapped to the width of what they title before the figure is laid out, and the PNG is cropped
to everything drawn, so that no title is cut off, however long the preset's name or the settings it lists.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

# Characters of title text per inch of width, at the 10-12 pt titles these figures use (a safe estimate:
# wrapping a little early costs a line, wrapping too late cuts the title).
_CHARS_PER_INCH = 11


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: figures are files, never windows."""
    # Imported on first use: matplotlib takes a good part of a second, and only drawing needs it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Wrap the titles, lay out and write a figure, then close it: pyplot keeps an unclosed figure alive (and
    warns past twenty), which a report drawing many plots would hit."""
    width_in = fig.get_figwidth()
    suptitle = getattr(fig, "_suptitle", None)
    if suptitle is not None and suptitle.get_text():
        suptitle.set_text(_wrap(suptitle.get_text(), width_in * _CHARS_PER_INCH))
    for axis in fig.get_axes():
        title = axis.title.get_text()
        if title:
            axis_width_in = axis.get_position().width * width_in
            axis.title.set_text(_wrap(title, axis_width_in * _CHARS_PER_INCH))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)


def _wrap(text: str, width: float) -> str:
    return "\n".join(textwrap.fill(line, max(20, int(width))) for line in text.splitlines())
